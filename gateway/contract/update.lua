-- The one atomic step behind every change of a job (docs/workers.md, Other languages).
--
-- Any worker, in any language, runs it with EVALSHA:
--   KEYS (6, all of one tenant T): gw:{T}:job:<id> (hash), gw:{T}:index (zset),
--         gw:{T}:seq (string), gw:{T}:epoch (string), gw:{T}:active (zset of the jobs
--         not yet ended), gw:{T}:expiry (zset: job -> when its record expires)
--   ARGV: op, job_id, payload (JSON object), job channel (the job key's name), tenant
--         channel gw:{T}:jobs, retention seconds (terminal job record), output ttl
--         seconds, nonce (any text), and optionally: the publish command (PUBLISH, the
--         default, or SPUBLISH on a cluster with sharded pub/sub), the lifetime in
--         seconds of a job that has not ended, renewed by each of its changes (default
--         604800, a week)
--   op: create | start | progress | complete | fail | cancel | request_cancel | delete
--
-- Reply on success: {1, event_id, event, data, changed}. `changed` is 0 when the call
-- asked for nothing new (for example the same progress twice): nothing was written or
-- published and `event_id`/`data` describe the current state.
-- Reply on refusal: {0, code, message, current_status}; code is one of not_found,
-- already_exists, invalid_transition, invalid_argument. Everything is checked before the
-- first write: a refused call writes nothing, bumps nothing and publishes nothing.
--
-- Limits (characters of UTF-8 text; every string must be valid UTF-8): phase 200,
-- error.code 128, error.message 4096, conversion.source_format/target_format 64,
-- original_filename and output.file_name 1024, output.content_type 255, output.file_url
-- 4096 and an absolute http(s) URL; numbers finite; counts whole numbers from 0 to 2^53;
-- metrics at most 32, names up to 64 characters; the whole snapshot at most 64 KiB.
--
-- The job hash holds `snapshot` (the JSON document of docs/api.md, The job snapshot, fields in a
-- fixed order), and beside it what the gateway needs without parsing JSON: version,
-- seq (the tenant seq of the job's last change), epoch, status, status_seq (the seq of
-- its last status change) and output_expires (unix seconds); and the estimator's state
-- (docs/api.md, Time left): eta_percent and eta_time (the last report of a percent and
-- when it came, unix seconds with microseconds) and eta_rate (percent per second).
--
-- Every accepted change publishes one message on the job channel and on the tenant
-- channel: a header line `<epoch>-<seq> <event> <version> <status> <publish_us> <job_id>`,
-- a newline, then the data line of the event (the snapshot, or for `deleted` a small
-- object). The gateway forwards it without reading Redis.

local NULL = cjson.null
local TERMINAL = {completed = true, failed = true, canceled = true}
local MAX_SECONDS = 315360000 -- ten years
local MAX_COUNT = 9007199254740992 -- 2^53: larger whole numbers are not exact in JSON
local MAX_SNAPSHOT_BYTES = 65536
local PRUNE_PER_CHANGE = 10
-- The rate's smoothing: a report's own rate weighs 1 - e^(-dt/RATE_TAU), dt the seconds
-- since the report before it, so that the estimate follows a rate that changes within
-- about RATE_TAU seconds however often the worker reports.
local RATE_TAU = 5

local function refuse(code, message, status)
  return {0, code, message, status or ''}
end

local function invalid(message)
  return refuse('invalid_argument', message)
end

-- -- KEYS and ARGV --------------------------------------------------------------------

if #KEYS ~= 6 then
  return invalid('the script takes 6 KEYS (job, index, seq, epoch, active, expiry), not ' .. #KEYS)
end
local tenant = string.match(KEYS[2], '^gw:{([^}]*)}:index$')
if not tenant then return invalid('KEYS[2] must be gw:{<tenant>}:index') end
local prefix = 'gw:{' .. tenant .. '}:'

local op, job_id, payload_json = ARGV[1], ARGV[2], ARGV[3]
if type(job_id) ~= 'string' or #job_id < 1 or #job_id > 128 or string.find(job_id, '[^%w_%-]') then
  return invalid('a job id is 1-128 characters of [A-Za-z0-9_-]')
end
local job_key, index_key, seq_key, epoch_key, active_key, expiry_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local expected = {prefix .. 'job:' .. job_id, index_key, prefix .. 'seq', prefix .. 'epoch',
  prefix .. 'active', prefix .. 'expiry'}
for i = 1, 6 do
  if KEYS[i] ~= expected[i] then
    return invalid('KEYS[' .. i .. '] must be ' .. expected[i] .. ' for job ' .. job_id)
  end
end
local job_channel, tenant_channel = ARGV[4], ARGV[5]
if job_channel ~= job_key then return invalid('ARGV[4], the job channel, must be ' .. job_key) end
if tenant_channel ~= prefix .. 'jobs' then
  return invalid('ARGV[5], the tenant channel, must be ' .. prefix .. 'jobs')
end

local function seconds(value)
  if type(value) ~= 'string' or not string.match(value, '^%d+$') then return nil end
  local n = tonumber(value)
  if n < 1 or n > MAX_SECONDS then return nil end
  return n
end
local retention, output_ttl = seconds(ARGV[6]), seconds(ARGV[7])
if not retention then return invalid('ARGV[6], the retention, must be whole seconds from 1 to ' .. MAX_SECONDS) end
if not output_ttl then return invalid('ARGV[7], the output ttl, must be whole seconds from 1 to ' .. MAX_SECONDS) end
local nonce = ARGV[8] or ''
local publish = ARGV[9] or 'PUBLISH'
if publish ~= 'PUBLISH' and publish ~= 'SPUBLISH' then
  return invalid('the publish command is PUBLISH or SPUBLISH, not ' .. tostring(publish))
end
local active_ttl = 604800
if ARGV[10] ~= nil then
  active_ttl = seconds(ARGV[10])
  if not active_ttl then return invalid('ARGV[10], the lifetime of a job not ended, must be whole seconds from 1 to ' .. MAX_SECONDS) end
end

-- -- the payload ----------------------------------------------------------------------

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
local ERROR_KEYS = {'code', 'message'}
-- What each field holds: 'count', or the longest text (characters).
local KINDS = {
  conversion = {source_format = 64, target_format = 64, source_size_bytes = 'count', original_filename = 1024},
  output = {file_name = 1024, content_type = 255, file_size_bytes = 'count', file_count = 'count', file_url = 4096},
  error = {code = 128, message = 4096},
}

if FIELDS[op] == nil then return invalid('unknown operation ' .. tostring(op)) end

-- Valid UTF-8 only (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF):
-- JSON text is UTF-8, and a stored snapshot that is not would break every reader.
local function utf8_valid(s)
  if not string.find(s, '[\128-\255]') then return true end
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    if c < 0x80 then
      i = i + 1
    else
      local len, low, high
      if c >= 0xC2 and c <= 0xDF then len, low, high = 2, 0x80, 0xBF
      elseif c == 0xE0 then len, low, high = 3, 0xA0, 0xBF
      elseif c == 0xED then len, low, high = 3, 0x80, 0x9F
      elseif c >= 0xE1 and c <= 0xEF then len, low, high = 3, 0x80, 0xBF
      elseif c == 0xF0 then len, low, high = 4, 0x90, 0xBF
      elseif c >= 0xF1 and c <= 0xF3 then len, low, high = 4, 0x80, 0xBF
      elseif c == 0xF4 then len, low, high = 4, 0x80, 0x8F
      else return false end
      if i + len - 1 > n then return false end
      local second = string.byte(s, i + 1)
      if second < low or second > high then return false end
      for j = i + 2, i + len - 1 do
        local b = string.byte(s, j)
        if b < 0x80 or b > 0xBF then return false end
      end
      i = i + len
    end
  end
  return true
end

local function chars(s)
  local _, count = string.gsub(s, '[^\128-\191]', '')
  return count
end

local function finite(v)
  return type(v) == 'number' and v == v and v ~= math.huge and v ~= -math.huge
end

if type(payload_json) ~= 'string' or not utf8_valid(payload_json) then
  return invalid('the payload must be JSON text in UTF-8')
end
local decoded, payload = pcall(cjson.decode, payload_json)
if not decoded or type(payload) ~= 'table' or payload[1] ~= nil then
  return invalid('payload must be a JSON object')
end
for name in pairs(payload) do
  if type(name) ~= 'string' or not FIELDS[op][name] then
    return invalid(op .. ' does not take the field ' .. tostring(name))
  end
end

local function check_text(v, longest, what)
  if type(v) ~= 'string' then return what .. ' must be a string' end
  if chars(v) > longest then return what .. ' is longer than ' .. longest .. ' characters' end
  return nil
end

local function check_object(value, what)
  if value == nil or value == NULL then return nil end
  if type(value) ~= 'table' or value[1] ~= nil then return what .. ' must be an object' end
  local kinds = KINDS[what]
  for k, v in pairs(value) do
    local kind = kinds[k]
    if kind == nil then return what .. ' does not take the field ' .. tostring(k) end
    if v ~= NULL then
      local name = what .. '.' .. k
      if kind == 'count' then
        if not finite(v) or v < 0 or v > MAX_COUNT or v ~= math.floor(v) then
          return name .. ' must be a whole number from 0 to 2^53 (9007199254740992)'
        end
      else
        local problem = check_text(v, kind, name)
        if problem then return problem end
      end
    end
  end
  return nil
end

local problem =
  check_object(payload.conversion, 'conversion') or
  check_object(payload.output, 'output') or
  check_object(payload.error, 'error')
if problem then return invalid(problem) end
if type(payload.output) == 'table' and type(payload.output.file_url) == 'string' then
  local url = payload.output.file_url
  if not string.match(url, '^[Hh][Tt][Tt][Pp][Ss]?://[^/?#%s]+') or string.find(url, '[%c%s]') then
    return invalid('output.file_url must be an absolute http(s) URL')
  end
end
if payload.metrics ~= nil then
  if type(payload.metrics) ~= 'table' or payload.metrics[1] ~= nil then
    return invalid('metrics must be an object of numbers')
  end
  for k, v in pairs(payload.metrics) do
    if #k > 64 then return invalid('a metric name is at most 64 characters') end
    if not finite(v) then return invalid('metrics.' .. k .. ' must be a finite number') end
  end
end
if payload.phase ~= nil and payload.phase ~= NULL then
  local phase_problem = check_text(payload.phase, 200, 'phase')
  if phase_problem then return invalid(phase_problem .. ' or null') end
end

-- -- the transition -------------------------------------------------------------------

-- Time comes from the Redis server so that every writer agrees (docs/api.md, The job snapshot).
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
-- cjson writes numbers with 14 significant digits: a count such as 9007199254740991 came
-- out as 9.007199254741e+15. Whole numbers are written in full, others with as few digits
-- as give the same number back.
local function number(n)
  if n == math.floor(n) and math.abs(n) <= MAX_COUNT then return string.format('%.0f', n) end
  local short = string.format('%.15g', n)
  if tonumber(short) == n then return short end
  return string.format('%.17g', n)
end

-- A percent is always written as a float (45.0), as exactly as any other number.
local function float(n)
  if n == math.floor(n) then return string.format('%.1f', n) end
  return number(n)
end

local function enc(v)
  if v == nil then return 'null' end
  if type(v) == 'number' then return number(v) end
  return (string.gsub(cjson.encode(v), '\\/', '/'))
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
  local names = {}
  for k in pairs(m) do names[#names + 1] = k end
  table.sort(names)
  local parts = {}
  for i, k in ipairs(names) do parts[i] = enc(k) .. ':' .. number(m[k]) end
  return '{' .. table.concat(parts, ',') .. '}'
end

local function encode(s)
  return '{"job_id":' .. enc(s.job_id) ..
    ',"status":' .. enc(s.status) ..
    ',"progress":{"percent":' .. float(s.progress.percent) .. ',"phase":' .. enc(s.progress.phase) ..
    ',"eta_at":' .. enc(s.progress.eta_at) .. ',"rate":' .. enc(s.progress.rate) .. '}' ..
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
  for k, v in pairs(payload.metrics) do s.metrics[k] = v end
  local count = 0
  for _ in pairs(s.metrics) do count = count + 1 end
  return count <= 32
end

local current = redis.call('HMGET', job_key, 'snapshot', 'seq', 'epoch', 'status_seq',
  'eta_percent', 'eta_time', 'eta_rate')
local s
if op == 'create' then
  if current[1] then
    local existing = cjson.decode(current[1])
    return refuse('already_exists', 'job ' .. job_id .. ' already exists', existing.status)
  end
  local conversion = payload.conversion
  if conversion == nil or conversion == NULL then conversion = {} end
  s = {
    job_id = job_id, status = 'queued', progress = {percent = 0, phase = NULL, eta_at = NULL, rate = NULL},
    conversion = conversion, output = NULL, metrics = {}, error = NULL,
    cancel_requested = false, created_at = iso(now), updated_at = iso(now),
    expires_at = NULL, version = 0,
  }
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
    if not finite(percent) or percent < 0 or percent > 100 then
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
elseif op == 'complete' then
  if old_status ~= 'running' then return refuse_transition('complete needs a running job') end
  local out = payload.output
  if out == nil or out == NULL then out = {} end
  if out.file_count == nil or out.file_count == NULL then out.file_count = 1 end
  out.expires_at = iso(now + output_ttl)
  s.output = out
  s.status = 'completed'
  s.progress.percent = 100
elseif op == 'fail' then
  local err = payload.error
  if err == nil or err == NULL or type(err.code) ~= 'string' or err.code == '' then
    return refuse('invalid_argument', 'fail needs error.code', old_status)
  end
  if err.message == nil or err.message == NULL then err.message = '' end
  s.error = err
  s.status = 'failed'
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
if payload.metrics ~= nil and not merge_metrics(s) then
  return refuse('invalid_argument', 'a job has at most 32 metrics', old_status)
end

-- Time left (docs/api.md): a rate in percent per second from the reports so far, weighted
-- to the recent ones, and the time 100 % comes at that rate. Nothing before a second
-- report of a higher percent; nothing once the job ended.
local precise = now + tonumber(clock[2]) / 1e6
local eta_percent, eta_time, eta_rate = tonumber(current[5]), tonumber(current[6]), tonumber(current[7])
if op == 'start' then
  eta_percent, eta_time, eta_rate = s.progress.percent, precise, nil
elseif op == 'progress' and payload.percent ~= nil and eta_percent ~= nil and eta_time ~= nil
    and s.progress.percent > eta_percent and precise > eta_time then
  local dt = precise - eta_time
  local rate = (s.progress.percent - eta_percent) / dt
  if eta_rate then
    local weight = 1 - math.exp(-dt / RATE_TAU)
    rate = eta_rate + weight * (rate - eta_rate)
  end
  eta_percent, eta_time, eta_rate = s.progress.percent, precise, rate
  s.progress.rate = tonumber(string.format('%.4g', rate))
  local left = (100 - s.progress.percent) / rate
  s.progress.eta_at = left <= MAX_SECONDS and iso(math.floor(precise + left + 0.5)) or NULL
elseif op == 'progress' and payload.percent ~= nil and eta_percent == nil then
  eta_percent, eta_time = s.progress.percent, precise  -- a job started before the estimator
end
if TERMINAL[s.status] or op == 'delete' then
  s.progress.eta_at, s.progress.rate = NULL, NULL
end

s.version = s.version + 1
s.updated_at = iso(now)
if TERMINAL[s.status] then s.expires_at = iso(now + retention) end

local event, data
if op == 'delete' then
  event = 'deleted'
  data = '{"job_id":' .. cjson.encode(job_id) .. ',"version":' .. string.format('%d', s.version) .. '}'
else
  if s.status ~= old_status or op == 'create' then event = 'status' else event = 'progress' end
  local encoded
  encoded, data = pcall(encode, s)
  if not encoded then return refuse('invalid_argument', 'the snapshot cannot be encoded', old_status) end
  if #data > MAX_SNAPSHOT_BYTES then
    return refuse('invalid_argument', 'the snapshot would exceed ' .. MAX_SNAPSHOT_BYTES .. ' bytes', old_status)
  end
end

-- -- the writes: nothing above has written anything ------------------------------------

-- Bump the tenant counter; a fresh counter gets a fresh epoch, so that a Redis that lost
-- its data is never mistaken for the old one (docs/api.md, Event streams).
local seq = redis.call('INCR', seq_key)
local epoch = redis.call('GET', epoch_key)
if not epoch or seq == 1 then
  -- sha1 hex digits are all within [a-z0-9].
  epoch = string.sub(redis.sha1hex(clock[1] .. '.' .. clock[2] .. '/' .. job_key .. '/' .. nonce), 1, 12)
  redis.call('SET', epoch_key, epoch)
end
local event_id = epoch .. '-' .. seq

if op == 'delete' then
  redis.call('DEL', job_key)
  redis.call('ZREM', expiry_key, job_id)
else
  local status_seq = tonumber(current[4]) or seq
  if event == 'status' then status_seq = seq end
  local output_expires = ''
  if s.status == 'completed' then
    -- With the microseconds: a whole-second stamp could expire a short TTL early.
    output_expires = string.format('%.6f', now + tonumber(clock[2]) / 1e6 + output_ttl)
  end
  redis.call('HSET', job_key, 'snapshot', data, 'version', s.version, 'seq', seq, 'epoch', epoch,
    'status', s.status, 'status_seq', status_seq, 'output_expires', output_expires,
    'eta_percent', eta_percent and string.format('%.17g', eta_percent) or '', 'eta_time', eta_time and string.format('%.6f', eta_time) or '',
    'eta_rate', eta_rate and string.format('%.17g', eta_rate) or '')
  -- A record lives `retention` seconds after its end, and a job that never ends does not
  -- live for ever either: each change renews it.
  local lifetime = TERMINAL[s.status] and retention or active_ttl
  redis.call('EXPIRE', job_key, lifetime)
  redis.call('ZADD', expiry_key, now + lifetime, job_id)
end
redis.call('ZADD', index_key, seq, job_id)
-- The active set lets a tenant-wide stream open with the jobs not yet ended without
-- reading every job the tenant has.
if op == 'delete' or TERMINAL[s.status] then
  redis.call('ZREM', active_key, job_id)
else
  redis.call('ZADD', active_key, seq, job_id)
end
-- Records that expired leave the index and the active set, a few per change.
-- (A second early: a record's own expiry counts milliseconds, the scores whole seconds.)
local expired = redis.call('ZRANGEBYSCORE', expiry_key, '-inf', now - 1, 'LIMIT', 0, PRUNE_PER_CHANGE)
for _, gone in ipairs(expired) do
  redis.call('ZREM', index_key, gone)
  redis.call('ZREM', active_key, gone)
  redis.call('ZREM', expiry_key, gone)
end

local message = event_id .. ' ' .. event .. ' ' .. string.format('%d', s.version) .. ' ' .. s.status ..
  ' ' .. clock[1] .. string.format('%06d', tonumber(clock[2])) .. ' ' .. job_id .. '\n' .. data
redis.call(publish, job_channel, message)
redis.call(publish, tenant_channel, message)
return {1, event_id, event, data, 1}
