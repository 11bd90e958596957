-- GCRA over one or more limits, all or nothing, on the Redis server's clock (gateway/policy/ratelimit.py).
--
-- KEYS[i]: the theoretical arrival time (TAT, microseconds since the epoch, an integer string) of limit i;
--          all keys share one hash tag, so the script runs on one shard of a cluster.
-- ARGV: for each limit i, three integers: emission interval (µs per request), period (µs), cost.
-- Returns {allowed (1|0), index of the refusing limit (0 when allowed), retry after (µs), remaining}.
--
-- Integer microseconds keep every value below 2^53 (exact in Lua's doubles) until the year 2255.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local tats = {}
local remaining = -1
for i = 1, n do
  local interval = tonumber(ARGV[3 * i - 2])
  local period = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval * cost
  local diff = new_tat - now
  if diff > period then
    return {0, i, diff - period, math.max(0, math.floor((period - (tat - now)) / interval))}
  end
  tats[i] = new_tat
  local left = math.floor((period - diff) / interval)
  if remaining < 0 or left < remaining then remaining = left end
end
for i = 1, n do
  redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', math.max(1, math.ceil((tats[i] - now) / 1000)))
end
return {1, 0, 0, remaining}
