-- Forget a job whose record is gone (it expired): take it out of the tenant's index,
-- active set and expiry set. The gateway runs it for the dead entries a list meets; the
-- update script does the same for up to ten expired jobs on every change.
--   KEYS: gw:{T}:job:<id>, gw:{T}:index, gw:{T}:active, gw:{T}:expiry
--   ARGV: job id
-- Reply: 1 when forgotten, 0 when the job exists (it was created again meanwhile).
local tenant = string.match(KEYS[2] or '', '^gw:{([^}]*)}:index$')
if #KEYS ~= 4 or not tenant or KEYS[1] ~= 'gw:{' .. tenant .. '}:job:' .. tostring(ARGV[1]) or
    KEYS[3] ~= 'gw:{' .. tenant .. '}:active' or KEYS[4] ~= 'gw:{' .. tenant .. '}:expiry' then
  return redis.error_reply('forget takes the job, index, active and expiry keys of one tenant')
end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
