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

local status = obj.status
if status == nil or status.observedGeneration == nil then
  return hs
end
-- A status written for an older spec says nothing about the current one.
if status.observedGeneration < (obj.metadata.generation or 0) then
  hs.message = "Waiting for the operator to act on generation " .. tostring(obj.metadata.generation) .. "."
  return hs
end

local accepted = condition(status, "Accepted")
if accepted ~= nil and accepted.status == "False" then
  hs.status = "Degraded"
  hs.message = accepted.message or "The spec is invalid."
  return hs
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
local applied = condition(status, "SpecApplied")
if applied ~= nil and applied.status == "False" then
  hs.status = "Degraded"
  hs.message = applied.message or "The spec is not applied."
  return hs
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
  hs.message = "Training"
  if running ~= nil and running.message ~= nil then
    hs.message = hs.message .. ": " .. running.message
  end
  if status.progress ~= nil and status.progress.step ~= nil and status.progress.totalSteps ~= nil then
    hs.message = hs.message .. " Step " .. tostring(status.progress.step) .. " of " .. tostring(status.progress.totalSteps) .. "."
  end
  return hs
end
hs.message = "Waiting for the workers to start."
return hs
