-- Argo CD health of a ScaleML DriftMonitor (resource.customizations.health.scaleml.dev_DriftMonitor).
-- Argo CD runs it without Lua's string library: only base and table functions here.
-- Drift is news about the data, not a fault of the monitor: a monitor that sees drift is Healthy,
-- and says so in its message.
local hs = {status = "Progressing", message = "Waiting for the operator to act on the DriftMonitor."}

local function condition(status, kind)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function said(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

-- A False condition about the spec (Accepted, SpecApplied): the spec is not in effect.
local function refused(status, kind, fallback)
  local c = condition(status, kind)
  if c ~= nil and c.status == "False" then
    return {status = "Degraded", message = said(c, fallback)}
  end
  return nil
end

local status = obj.status
if status == nil or status.observedGeneration == nil then
  return hs
end
if status.observedGeneration < (obj.metadata.generation or 0) then
  hs.message = "Waiting for the operator to act on generation " .. tostring(obj.metadata.generation) .. "."
  return hs
end

local invalid = refused(status, "Accepted", "The spec is invalid.")
if invalid ~= nil then
  return invalid
end

local ready = condition(status, "Ready")
if ready == nil then
  return hs
end
if ready.status ~= "True" then
  -- A target that does not capture requests gives the monitor nothing to read until its spec changes;
  -- a missing target or model version may still come (a GitOps sync applies them in any order).
  if ready.reason == "CaptureDisabled" then
    hs.status = "Degraded"
  end
  hs.message = said(ready, "The monitor is not running yet.")
  return hs
end

hs.status = "Healthy"
hs.message = said(ready, "The monitor is running.")
local drift = condition(status, "DriftDetected")
if drift ~= nil and drift.status == "True" then
  hs.message = hs.message .. " " .. said(drift, "Drift detected.")
end
local retraining = condition(status, "Retraining")
if retraining ~= nil and retraining.status == "True" then
  hs.message = hs.message .. " " .. said(retraining, "Retraining.")
end
return hs
