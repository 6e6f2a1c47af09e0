-- Argo CD health of a ScaleML TrainingJob (resource.customizations.health.scaleml.dev_TrainingJob).
-- Argo CD runs it without Lua's string library: only base and table functions here.
local hs = {status = "Progressing", message = "Waiting for the operator to act on the TrainingJob."}

local function condition(status, kind)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

-- A False condition about the spec (Accepted, SpecApplied): the spec is not in effect.
local function refused(status, kind, fallback)
  local c = condition(status, kind)
  if c ~= nil and c.status == "False" then
    return {status = "Degraded", message = c.message or fallback}
  end
  return nil
end

local status = obj.status
if status == nil or status.observedGeneration == nil then
  return hs
end
-- A status written for an older spec says nothing about the current one.
if status.observedGeneration < (obj.metadata.generation or 0) then
  hs.message = "Waiting for the operator to act on generation " .. tostring(obj.metadata.generation) .. "."
  return hs
end

local invalid = refused(status, "Accepted", "The spec is invalid.")
if invalid ~= nil then
  return invalid
end

local phase = status.phase
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = "Training finished"
  if status.modelVersion ~= nil then
    hs.message = hs.message .. "; model version " .. tostring(status.modelVersion) .. " exported"
  end
  hs.message = hs.message .. "."
  return hs
end
if phase == "Failed" then
  local failed = condition(status, "Failed")
  hs.status = "Degraded"
  hs.message = "Training failed."
  if failed ~= nil and failed.reason ~= nil then
    hs.message = failed.reason .. ": " .. (failed.message or "")
  end
  return hs
end
-- A spec change the running Job cannot take (its pod template is immutable) is not in effect.
local unapplied = refused(status, "SpecApplied", "The spec is not applied.")
if unapplied ~= nil then
  return unapplied
end
if phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = "The Job is suspended (runPolicy.suspend, or a queue)."
  return hs
end
if phase == "Running" then
  local restarting = condition(status, "Restarting")
  if restarting ~= nil and restarting.status == "True" then
    hs.message = "A worker failed and is being replaced: " .. (restarting.message or "")
    return hs
  end
  local running = condition(status, "Running")
  if running ~= nil and running.status == "False" then
    hs.message = "Waiting for workers to run again: " .. (running.message or "")
    return hs
  end
  hs.message = "Training"
  if running ~= nil and running.message ~= nil then
    hs.message = hs.message .. ": " .. running.message
  end
  if status.progress ~= nil and status.progress.step ~= nil and status.progress.totalSteps ~= nil then
    hs.message = hs.message .. " Step " .. tostring(status.progress.step) .. " of " .. tostring(status.progress.totalSteps) .. "."
  end
  return hs
end
-- Pending: the Running condition says why the workers do not run (Unschedulable, ImagePullBackOff, ...).
local waiting = condition(status, "Running")
hs.message = "Waiting for the workers to start."
if waiting ~= nil and waiting.message ~= nil and waiting.message ~= "" then
  hs.message = "Waiting for the workers to start: " .. waiting.message
end
return hs
