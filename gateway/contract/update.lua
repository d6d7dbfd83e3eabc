-- The one atomic step behind every change of a job (DESIGN.md section 4).
--
-- Any worker, in any language, runs it with EVALSHA:
--   KEYS: job hash, tenant index (zset), tenant seq (string), tenant epoch (string),
--         tenant active set (zset of the jobs not yet ended)
--   ARGV: op, job_id, payload (JSON object), job channel, tenant channel,
--         retention seconds (terminal job record), output ttl seconds, nonce (any text),
--         publish command (optional: PUBLISH, the default, or SPUBLISH on a cluster with
--         sharded pub/sub)
--   op: create | start | progress | complete | fail | cancel | request_cancel | delete
--
-- Reply on success: {1, event_id, event, data, changed}. `changed` is 0 when the call
-- asked for nothing new (for example the same progress twice): nothing was written or
-- published and `event_id`/`data` describe the current state.
-- Reply on refusal: {0, code, message, current_status}; code is one of not_found,
-- already_exists, invalid_transition, invalid_argument. Nothing was written.
--
-- The job hash holds `snapshot` (the JSON document of DESIGN.md section 1, fields in a
-- fixed order), and beside it what the gateway needs without parsing JSON: version,
-- seq (the tenant seq of the job's last change), epoch, status, status_seq (the seq of
-- its last status change) and output_expires (unix seconds).
--
-- Every accepted change publishes one message on the job channel and on the tenant
-- channel: a header line `<epoch>-<seq> <event> <version> <status> <publish_us> <job_id>`,
-- a newline, then the data line of the event (the snapshot, or for `deleted` a small
-- object). The gateway forwards it without reading Redis.

local job_key, index_key, seq_key, epoch_key, active_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local op, job_id, payload_json = ARGV[1], ARGV[2], ARGV[3]
local job_channel, tenant_channel = ARGV[4], ARGV[5]
local retention, output_ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
local nonce = ARGV[8] or ''
local publish = ARGV[9] or 'PUBLISH'

local NULL = cjson.null
local TERMINAL = {completed = true, failed = true, canceled = true}

local function refuse(code, message, status)
  return {0, code, message, status or ''}
end

-- Allowed payload fields per operation: anything else is refused, so a typo in a worker
-- is an error at once instead of a silently ignored field.
local FIELDS = {
  create = {conversion = true, metrics = true},
  start = {phase = true},
  progress = {percent = true, phase = true, metrics = true},
  complete = {output = true, metrics = true},
  fail = {error = true, metrics = true},
  cancel = {},
  request_cancel = {},
  delete = {},
}
local CONVERSION_KEYS = {'source_format', 'target_format', 'source_size_bytes', 'original_filename'}
local OUTPUT_KEYS = {'file_name', 'content_type', 'file_size_bytes', 'file_count', 'file_url'}
local ERROR_KEYS = {'code', 'message'}

if FIELDS[op] == nil then
  return refuse('invalid_argument', 'unknown operation ' .. tostring(op))
end
if publish ~= 'PUBLISH' and publish ~= 'SPUBLISH' then
  return refuse('invalid_argument', 'the publish command is PUBLISH or SPUBLISH, not ' .. tostring(publish))
end
local decoded, payload = pcall(cjson.decode, payload_json)
if not decoded or type(payload) ~= 'table' or payload[1] ~= nil then
  return refuse('invalid_argument', 'payload must be a JSON object')
end
for name in pairs(payload) do
  if type(name) ~= 'string' or not FIELDS[op][name] then
    return refuse('invalid_argument', op .. ' does not take the field ' .. tostring(name))
  end
end

local function check_object(value, keys, what, kinds)
  if value == nil or value == NULL then return nil end
  if type(value) ~= 'table' or value[1] ~= nil then return what .. ' must be an object' end
  local known = {}
  for _, k in ipairs(keys) do known[k] = true end
  for k, v in pairs(value) do
    if not known[k] then return what .. ' does not take the field ' .. tostring(k) end
    local kind = kinds[k]
    if v ~= NULL and kind == 'count' then
      if type(v) ~= 'number' or v < 0 or v ~= math.floor(v) then
        return what .. '.' .. k .. ' must be a whole number >= 0'
      end
    elseif v ~= NULL and type(v) ~= 'string' then
      return what .. '.' .. k .. ' must be a string'
    end
  end
  return nil
end

local problem =
  check_object(payload.conversion, CONVERSION_KEYS, 'conversion', {source_size_bytes = 'count'}) or
  check_object(payload.output, OUTPUT_KEYS, 'output', {file_size_bytes = 'count', file_count = 'count'}) or
  check_object(payload.error, ERROR_KEYS, 'error', {})
if problem then return refuse('invalid_argument', problem) end
if payload.metrics ~= nil then
  if type(payload.metrics) ~= 'table' or payload.metrics[1] ~= nil then
    return refuse('invalid_argument', 'metrics must be an object of numbers')
  end
  for k, v in pairs(payload.metrics) do
    if type(v) ~= 'number' then return refuse('invalid_argument', 'metrics.' .. k .. ' must be a number') end
  end
end
if payload.phase ~= nil and payload.phase ~= NULL and type(payload.phase) ~= 'string' then
  return refuse('invalid_argument', 'phase must be a string or null')
end

-- Time comes from the Redis server so that every writer agrees (DESIGN.md section 1).
local clock = redis.call('TIME')
local now = tonumber(clock[1])

local function iso(secs)
  -- days since 1970-01-01 to a civil date (H. Hinnant's algorithm); Redis' Lua has no os.date.
  local days = math.floor(secs / 86400)
  local rem = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02dZ', y, m, d,
    math.floor(rem / 3600), math.floor(rem % 3600 / 60), rem % 60)
end

-- Encoding by hand keeps the snapshot's fields in the documented order.
-- cjson escapes '/' as '\/': valid JSON, but URLs read badly that way. Every '/' in its
-- output is escaped, and an escaped backslash never ends in '/', so the undo is exact.
local function enc(v)
  if v == nil then return 'null' end
  return (string.gsub(cjson.encode(v), '\\/', '/'))
end

local function float(n)
  if n == math.floor(n) then return string.format('%.1f', n) end
  return string.format('%.15g', n)
end

local function object(t, keys, all)
  if t == nil or t == NULL then return 'null' end
  local parts = {}
  for _, k in ipairs(keys) do
    if all or (t[k] ~= nil and t[k] ~= NULL) then
      parts[#parts + 1] = '"' .. k .. '":' .. enc(t[k])
    end
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

local function metrics_json(m)
  if next(m) == nil then return '{}' end
  return (string.gsub(cjson.encode(m), '\\/', '/'))
end

local function encode(s)
  return '{"job_id":' .. enc(s.job_id) ..
    ',"status":' .. enc(s.status) ..
    ',"progress":{"percent":' .. float(s.progress.percent) .. ',"phase":' .. enc(s.progress.phase) .. '}' ..
    ',"conversion":' .. object(s.conversion, CONVERSION_KEYS, false) ..
    ',"output":' .. object(s.output, {'file_name', 'content_type', 'file_size_bytes', 'file_count', 'file_url', 'expires_at'}, true) ..
    ',"metrics":' .. metrics_json(s.metrics) ..
    ',"error":' .. object(s.error, ERROR_KEYS, true) ..
    ',"cancel_requested":' .. enc(s.cancel_requested) ..
    ',"created_at":' .. enc(s.created_at) ..
    ',"updated_at":' .. enc(s.updated_at) ..
    ',"expires_at":' .. enc(s.expires_at) ..
    ',"version":' .. string.format('%d', s.version) .. '}'
end

local function merge_metrics(s)
  if payload.metrics then
    for k, v in pairs(payload.metrics) do s.metrics[k] = v end
  end
end

local current = redis.call('HMGET', job_key, 'snapshot', 'seq', 'epoch', 'status_seq')
local s
if op == 'create' then
  if current[1] then
    local existing = cjson.decode(current[1])
    return refuse('already_exists', 'job ' .. job_id .. ' already exists', existing.status)
  end
  local conversion = payload.conversion
  if conversion == nil or conversion == NULL then conversion = {} end
  s = {
    job_id = job_id, status = 'queued', progress = {percent = 0, phase = NULL},
    conversion = conversion, output = NULL, metrics = {}, error = NULL,
    cancel_requested = false, created_at = iso(now), updated_at = iso(now),
    expires_at = NULL, version = 0,
  }
  merge_metrics(s)
else
  if not current[1] then return refuse('not_found', 'job ' .. job_id .. ' does not exist') end
  s = cjson.decode(current[1])
  if type(s.metrics) ~= 'table' then s.metrics = {} end
end

local old_status = s.status
local function refuse_transition(what)
  return refuse('invalid_transition', 'job ' .. job_id .. ' is ' .. old_status .. ': ' .. what, old_status)
end
local function unchanged()
  return {1, current[3] .. '-' .. current[2], 'progress', current[1], 0}
end

if op ~= 'create' and TERMINAL[old_status] and op ~= 'delete' then
  if op == 'request_cancel' or op == 'cancel' then
    return refuse_transition('a job that ended cannot be canceled')
  end
  return refuse_transition('a job that ended accepts no change (' .. op .. ' refused)')
end

if op == 'start' then
  if old_status ~= 'queued' then return refuse_transition('start needs a queued job') end
  s.status = 'running'
  if payload.phase ~= nil then s.progress.phase = payload.phase end
elseif op == 'progress' then
  if old_status ~= 'running' then return refuse_transition('progress needs a running job (call start first)') end
  local percent = payload.percent
  if percent ~= nil then
    if type(percent) ~= 'number' or percent ~= percent or percent < 0 or percent > 100 then
      return refuse('invalid_argument', 'percent must be a number from 0 to 100', old_status)
    end
    if percent < s.progress.percent then
      return refuse_transition('progress never goes back (' .. float(percent) .. ' < ' .. float(s.progress.percent) .. ')')
    end
  end
  local same_percent = percent == nil or percent == s.progress.percent
  local same_phase = payload.phase == nil or payload.phase == s.progress.phase
  if same_percent and same_phase and payload.metrics == nil then return unchanged() end
  if percent ~= nil then s.progress.percent = percent end
  if payload.phase ~= nil then s.progress.phase = payload.phase end
  merge_metrics(s)
elseif op == 'complete' then
  if old_status ~= 'running' then return refuse_transition('complete needs a running job') end
  local out = payload.output
  if out == nil or out == NULL then out = {} end
  if out.file_count == nil or out.file_count == NULL then out.file_count = 1 end
  out.expires_at = iso(now + output_ttl)
  s.output = out
  s.status = 'completed'
  s.progress.percent = 100
  merge_metrics(s)
elseif op == 'fail' then
  local err = payload.error
  if err == nil or err == NULL or type(err.code) ~= 'string' or err.code == '' then
    return refuse('invalid_argument', 'fail needs error.code', old_status)
  end
  if err.message == nil or err.message == NULL then err.message = '' end
  s.error = err
  s.status = 'failed'
  merge_metrics(s)
elseif op == 'cancel' then
  s.status = 'canceled'
elseif op == 'request_cancel' then
  if old_status == 'queued' then
    s.status = 'canceled'
  elseif s.cancel_requested then
    return unchanged()
  else
    s.cancel_requested = true
  end
elseif op == 'delete' then
  if not TERMINAL[old_status] then
    return refuse_transition('only a job that ended can be deleted (cancel it first)')
  end
end

-- The change is accepted: bump the tenant counter; a fresh counter gets a fresh epoch, so
-- that a Redis that lost its data is never mistaken for the old one (DESIGN.md section 3).
local seq = redis.call('INCR', seq_key)
local epoch = redis.call('GET', epoch_key)
if not epoch or seq == 1 then
  -- sha1 hex digits are all within [a-z0-9].
  epoch = string.sub(redis.sha1hex(clock[1] .. '.' .. clock[2] .. '/' .. job_key .. '/' .. nonce), 1, 12)
  redis.call('SET', epoch_key, epoch)
end
local event_id = epoch .. '-' .. seq
s.version = s.version + 1
s.updated_at = iso(now)

local event, data
if op == 'delete' then
  event = 'deleted'
  data = '{"job_id":' .. cjson.encode(job_id) .. ',"version":' .. string.format('%d', s.version) .. '}'
  redis.call('DEL', job_key)
else
  local status_seq = tonumber(current[4]) or seq
  if s.status ~= old_status or op == 'create' then
    event = 'status'
    status_seq = seq
  else
    event = 'progress'
  end
  if TERMINAL[s.status] then s.expires_at = iso(now + retention) end
  data = encode(s)
  local output_expires = ''
  if s.status == 'completed' then
    -- With the microseconds: a whole-second stamp could expire a short TTL early.
    output_expires = string.format('%.6f', now + tonumber(clock[2]) / 1e6 + output_ttl)
  end
  redis.call('HSET', job_key, 'snapshot', data, 'version', s.version, 'seq', seq, 'epoch', epoch,
    'status', s.status, 'status_seq', status_seq, 'output_expires', output_expires)
  if TERMINAL[s.status] then redis.call('EXPIRE', job_key, retention) end
end
redis.call('ZADD', index_key, seq, job_id)
-- The active set lets a tenant-wide stream open with the jobs not yet ended without
-- reading every job the tenant has (issue 3).
if op == 'delete' or TERMINAL[s.status] then
  redis.call('ZREM', active_key, job_id)
else
  redis.call('ZADD', active_key, seq, job_id)
end

local message = event_id .. ' ' .. event .. ' ' .. string.format('%d', s.version) .. ' ' .. s.status ..
  ' ' .. clock[1] .. string.format('%06d', tonumber(clock[2])) .. ' ' .. job_id .. '\n' .. data
redis.call(publish, job_channel, message)
redis.call(publish, tenant_channel, message)
return {1, event_id, event, data, 1}
