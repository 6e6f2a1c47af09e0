-- Argo CD health of a ScaleML ModelDeployment (resource.customizations.health.scaleml.dev_ModelDeployment).
-- Argo CD runs it without Lua's string library: only base and table functions here.
local hs = {status = "Progressing", message = "Waiting for the operator to act on the ModelDeployment."}

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

-- SpecApplied is False when the API server refused a child (an autoscaler a cluster policy refuses, say).
local invalid = refused(status, "Accepted", "The spec is invalid.")
  or refused(status, "SpecApplied", "The spec is not applied.")
if invalid ~= nil then
  return invalid
end

local phase = status.phase
local ready = condition(status, "Ready")
if phase == "Failed" or phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = said(condition(status, "Degraded"), "Triton replicas are failing.")
  return hs
end
-- A new version the promotion gates hold back waits for a person (the promote annotation), as an
-- Argo Rollouts rollout paused for promotion does: Suspended, with what the gates said.
if status.candidateVersion ~= nil then
  hs.status = "Suspended"
  hs.message = said(condition(status, "Promoted"), "A new version is held back by the promotion gates.")
  return hs
end
if phase == "Ready" then
  hs.status = "Healthy"
  hs.message = said(ready, "Serving.")
  return hs
end
-- Scaled to zero on purpose, as Argo CD deems a Deployment of zero replicas.
if ready ~= nil and ready.reason == "ScaledToZero" then
  hs.status = "Healthy"
  hs.message = said(ready, "Scaled to zero replicas.")
  return hs
end
-- A rollout: Progressing says what it waits for, a pod of the new template that cannot start included
-- (its reason, name and the scheduler's or kubelet's words), and whether older pods still serve.
if phase == "Progressing" then
  hs.message = said(condition(status, "Progressing"), "Rolling out.")
  return hs
end
-- Pending: no model version yet, or the Deployment is being created.
hs.message = said(ready, "Waiting for a model version to serve.")
return hs
