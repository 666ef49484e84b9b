//! The Lua scripts every instance runs in Redis, and the key names they touch. Each script is
//! one atomic step of the cluster's protocol (see the module above for the whole of it).

use crate::stream::parity::ByParity;

/// Checks the lease, renews it, then advances and publishes the stream ticked if it is in demand.
/// KEYS: lease, pos:odd, pos:even, demand:odd, demand:even.
/// ARGV: token, lease ms, channel, floor odd, floor even, stream ticked (1 odd, 2 even).
/// Returns {-1} when the lease is not ours, else {odd position or 0, even position or 0}.
pub(super) const TICK_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local names = {'odd', 'even'}
local published = {0, 0}
for i = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[3 + i], '-inf', now)
  if tonumber(ARGV[6]) == i and redis.call('ZCARD', KEYS[3 + i]) > 0 then
    local position = tonumber(redis.call('GET', KEYS[1 + i]) or '0')
    local floor = tonumber(ARGV[3 + i])
    if position < floor then position = floor end
    position = position + 1
    redis.call('SET', KEYS[1 + i], position)
    redis.call('PUBLISH', ARGV[3], names[i] .. ' ' .. position)
    published[i] = position
  end
end
return published
";

/// Takes a free lease. KEYS: lease, fence. ARGV: instance id, lease ms, nonce.
/// Returns the new token, or nil when another instance holds the lease.
pub(super) const ACQUIRE_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local fence = redis.call('INCR', KEYS[2])
local token = ARGV[1] .. ':' .. fence .. ':' .. ARGV[3]
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return token
";

/// Gives the lease up if it is still ours, and says so on the release channel, where the
/// other instances wait to ask for it. KEYS: lease. ARGV: token, release channel.
pub(super) const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], 'released')
  return 1
end
return 0
";

/// Claims or withdraws this instance's demand for each stream.
/// KEYS: demand:odd, demand:even. ARGV: instance id, ttl ms, odd wanted (0/1), even wanted.
pub(super) const DEMAND_SCRIPT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
for i = 1, 2 do
  if ARGV[2 + i] == '1' then
    redis.call('ZADD', KEYS[i], now + tonumber(ARGV[2]), ARGV[1])
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  else
    redis.call('ZREM', KEYS[i], ARGV[1])
  end
end
return 1
";

/// The Redis key names of one cluster.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    pub lease: String,
    pub fence: String,
    pub positions: ByParity<String>,
    pub demand: ByParity<String>,
    pub channel: String,
    /// Where a leader that gives its lease up says so.
    pub released: String,
}

impl Keys {
    pub(super) fn new(cluster: &str) -> Keys {
        // The braces make every key of a cluster hash to one Redis Cluster slot, which
        // multi-key scripts require there.
        let key = |name: &str| format!("integers:{{{cluster}}}:{name}");
        Keys {
            lease: key("lease"),
            fence: key("fence"),
            positions: ByParity::from_fn(|parity| key(&format!("pos:{parity}"))),
            demand: ByParity::from_fn(|parity| key(&format!("demand:{parity}"))),
            channel: key("ticks"),
            released: key("released"),
        }
    }
}
