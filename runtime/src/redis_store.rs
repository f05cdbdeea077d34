//! The Redis limit store (`state redis ...`): every gw process sharing one Redis enforces one
//! global limit.
//!
//! - One round trip per request: a Lua script checks all of the request's limits atomically,
//!   with the same all-or-nothing rule as the local store (every verdict is computed first; all
//!   are charged only when every enforced limit admits the request; a shadow limit that refuses
//!   is not charged).
//! - One clock: the script reads Redis's `TIME`, so processes on hosts whose clocks disagree
//!   still share one timeline.
//! - Rate and token limits keep a GCRA theoretical arrival time (a string of nanoseconds since
//!   the Unix epoch) and compute exactly what `gw_engine::gcra::Gcra::check` computes. Lua
//!   numbers are doubles (exact to 2^53, about 104 days of nanoseconds), so the script never
//!   handles an absolute time as one number: it splits it into seconds and nanoseconds and
//!   works with times relative to now.
//! - Concurrency limits keep a sorted set of leases (the request id) scored by their expiry in
//!   ms: expired leases are removed before counting, so a crashed gw's slots come back after
//!   the lease TTL; a live request's lease is refreshed (`refresh`) while it runs.
//! - Every key has a TTL: a GCRA key until its TAT has passed (the bucket is full again, the
//!   key holds no information) plus a little slack, a lease set the lease TTL.
//! - Every call is bounded by the store's timeout: a slow Redis is a failed Redis. A timed-out
//!   check may still have been applied by Redis; its charges then expire with their TTLs.
//!
//! Connecting never blocks or fails construction (only an invalid URL does): the connection is
//! made in the background and, once made, a `ConnectionManager` reconnects by itself. When
//! Redis stops answering for a while although calls time out (a half-open connection), the
//! connection is dropped and made again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use gw_engine::gcra::Gcra;

use crate::limits::{counter_name, Charge, LimitCheck, LimitResult};

/// The prefix of every key gw writes.
///
/// `{lim}` is a Redis Cluster hash tag: every limit key hashes to the same slot. A request's
/// limits are checked by one multi-key script, and Redis Cluster runs a script only when all
/// of its keys are in one slot; the tag is the only way to guarantee that for any set of
/// counters. The trade-off: all of gw's limit traffic lands on the one node (and its replicas)
/// that owns the slot, so a cluster spreads nothing but gives failover. At one small script
/// per request a single Redis node handles well over 50k checks per second.
pub const KEY_PREFIX: &str = "gw:{lim}:";

/// Counter names (limit id + counter key, where the key may be a header value) longer than
/// this are stored under their SHA-256 instead, so a client cannot make gw write huge keys.
pub const MAX_PLAIN_NAME: usize = 128;

/// The default lifetime of a concurrency lease without a refresh.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(60);

/// How long a GCRA key outlives its TAT (ms).
const TAT_SLACK_MS: u64 = 1_000;

/// Several requests holding a slot under the same lease (a client reusing its
/// `x-request-id`) are told apart by a `#n` suffix, up to this many; more are refused.
const LEASE_DUPLICATES: u32 = 16;

/// A connection that timed out for this long without any answer in between is made again.
const STALE_AFTER: Duration = Duration::from_secs(1);

/// Why a Redis call failed. Never carries the URL (it may hold a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("invalid Redis URL: {0}")]
    Url(String),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis is unreachable: {0}")]
    Unavailable(String),
    #[error("Redis error: {0}")]
    Redis(String),
    #[error("unexpected answer from Redis: {0}")]
    Protocol(String),
}

impl StoreError {
    /// A short label for metrics: `url`, `timeout`, `unavailable`, `redis` or `protocol`.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Url(_) => "url",
            StoreError::Timeout(_) => "timeout",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Redis(_) => "redis",
            StoreError::Protocol(_) => "protocol",
        }
    }
}

/// Lua shared by the scripts: the clock (Redis `TIME`, or `ARGV[1]` when tests give one) and
/// exact conversions between stored absolute times and times relative to now.
const PRELUDE: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local E9 = 1000000000
local DUPS = __DUPS__
local function split(v)
  local len = string.len(v)
  if len <= 9 then return 0, tonumber(v) end
  return tonumber(string.sub(v, 1, len - 9)), tonumber(string.sub(v, len - 8))
end
local S, N
if ARGV[1] ~= '' then
  S, N = split(ARGV[1])
else
  local t = redis.call('TIME')
  S, N = tonumber(t[1]), tonumber(t[2]) * 1000
end
local NOW_MS = S * 1000 + math.floor(N / 1000000)
-- a stored TAT as ns from now (0 when absent or unreadable)
local function rel(v)
  if not v then return 0 end
  local s, n = split(v)
  if not s or not n then return 0 end
  return (s - S) * E9 + (n - N)
end
-- ns from now (>= 0) as an absolute time string
local function abs(r)
  local total = N + r
  local carry = math.floor(total / E9)
  local rest = total - carry * E9
  if rest < 0 then carry = carry - 1; rest = rest + E9 end
  if rest >= E9 then carry = carry + 1; rest = rest - E9 end
  return string.format('%d%09d', S + carry, rest)
end
-- the TTL: until the bucket is full again, plus slack (at most ~31 years: Lua prints larger
-- numbers in exponent form, which PX refuses)
local function set_tat(key, r)
  local ttl = math.min(math.max(math.ceil(r / 1000000), 1) + __SLACK__, 1000000000000)
  redis.call('SET', key, abs(r), 'PX', string.format('%d', ttl))
end
local CAP = 4000000000000000000
local function clamp(x)
  if x < 0 then return 0 end
  if x > CAP then return CAP end
  return x
end
local function lease_name(lease, j)
  if j == 0 then return lease end
  return lease .. '#' .. j
end
"#;

/// KEYS[i]: check i's counter. ARGV[2]: the lease TTL (ms). Then 5 values per check:
/// `g, shadow, interval_ns, tolerance_ns, cost` (GCRA) or `c, shadow, max, lease, ''`.
/// Returns 4 integers per check: allowed (0/1), remaining, retry_after_ns, reset_after_ns.
const CHECK: &str = r#"
local ttl = tonumber(ARGV[2])
local out, writes = {}, {}
local admitted = true
for i = 1, #KEYS do
  local a = 2 + (i - 1) * 5
  local kind, shadow, key = ARGV[a + 1], ARGV[a + 2] == '1', KEYS[i]
  local allowed, remaining, retry, reset
  if kind == 'g' then
    local interval, tolerance, cost = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
    local t = rel(redis.call('GET', key))
    local new = math.max(t, 0) + interval * math.max(cost, 1)
    local allow_at = new - (tolerance + interval)
    if allow_at > 0 then
      allowed, remaining, retry, reset = false, 0, allow_at, math.max(t, 0)
    else
      allowed, retry, reset = true, 0, new
      remaining = math.floor(math.max(tolerance + interval - new, 0) / interval)
      writes[i] = new
    end
  else
    local max, lease = tonumber(ARGV[a + 3]), ARGV[a + 4]
    redis.call('ZREMRANGEBYSCORE', key, '-inf', NOW_MS)
    local held = redis.call('ZCARD', key)
    local member = nil
    if held < max then
      for j = 0, DUPS do
        local m = lease_name(lease, j)
        if not redis.call('ZSCORE', key, m) then member = m; break end
      end
    end
    retry, reset = 0, 0
    if member then
      allowed, remaining = true, max - held - 1
      writes[i] = member
    else
      allowed, remaining = false, math.max(max - held, 0)
    end
  end
  if not allowed and not shadow then admitted = false end
  local allowed_int = 0
  if allowed then allowed_int = 1 end
  out[#out + 1] = allowed_int
  out[#out + 1] = clamp(remaining)
  out[#out + 1] = clamp(retry)
  out[#out + 1] = clamp(reset)
end
if admitted then
  for i = 1, #KEYS do
    local w = writes[i]
    if w then
      if ARGV[2 + (i - 1) * 5 + 1] == 'g' then
        set_tat(KEYS[i], w)
      else
        redis.call('ZADD', KEYS[i], NOW_MS + ttl, w)
        redis.call('PEXPIRE', KEYS[i], ttl)
      end
    end
  end
end
return out
"#;

/// KEYS[1]: a GCRA counter. ARGV[2]: interval_ns, ARGV[3]: delta (signed units).
/// The same move as `limits::adjust_tat`.
const ADJUST: &str = r#"
local interval, delta = tonumber(ARGV[2]), tonumber(ARGV[3])
local t = math.max(rel(redis.call('GET', KEYS[1])), 0)
local step = interval * math.abs(delta)
local new
if delta >= 0 then new = t + step else new = math.max(t - step, 0) end
set_tat(KEYS[1], new)
return 1
"#;

/// KEYS[1]: a lease set. ARGV[2]: the lease. Removes one slot held under it.
const RELEASE: &str = r#"
for j = 0, DUPS do
  if redis.call('ZREM', KEYS[1], lease_name(ARGV[2], j)) == 1 then return 1 end
end
return 0
"#;

/// KEYS[i]: lease sets. ARGV[2]: the lease TTL (ms), ARGV[2 + i]: the lease in KEYS[i].
/// Pushes the expiry of leases still held; a lease already expired is not taken again.
const REFRESH: &str = r#"
local ttl = tonumber(ARGV[2])
for i = 1, #KEYS do
  for j = 0, DUPS do
    redis.call('ZADD', KEYS[i], 'XX', NOW_MS + ttl, lease_name(ARGV[2 + i], j))
  end
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return 1
"#;

fn script(body: &str) -> Script {
    let prelude =
        PRELUDE.replace("__DUPS__", &LEASE_DUPLICATES.to_string()).replace("__SLACK__", &TAT_SLACK_MS.to_string());
    Script::new(&format!("{prelude}{body}"))
}

/// `prefix` + the counter name, or its SHA-256 when long.
fn key_name(kind: &str, id: &str, key: &str) -> String {
    let counter = counter_name(id, key);
    if counter.len() > MAX_PLAIN_NAME {
        format!("{KEY_PREFIX}{kind}#{}", hex::encode(Sha256::digest(counter.as_bytes())))
    } else {
        format!("{KEY_PREFIX}{kind}:{counter}")
    }
}

/// The Redis key of a rate or token limit's counter.
pub fn gcra_key(id: &str, key: &str) -> String {
    key_name("r", id, key)
}

/// The Redis key of a concurrency limit's lease set.
pub fn slots_key(id: &str, key: &str) -> String {
    key_name("c", id, key)
}

/// A lease as stored (long ones hashed).
fn member(lease: &str) -> String {
    if lease.len() > MAX_PLAIN_NAME {
        format!("#{}", hex::encode(Sha256::digest(lease.as_bytes())))
    } else {
        lease.to_string()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The connection once made, numbered so a stale one is replaced only once.
#[derive(Clone)]
struct Conn {
    generation: u64,
    manager: ConnectionManager,
}

/// What the background connector shares with the store.
struct Shared {
    client: redis::Client,
    config: ConnectionManagerConfig,
    conn: watch::Sender<Option<Conn>>,
    connecting: AtomicBool,
    generations: AtomicU64,
    last_error: Mutex<String>,
}

impl Shared {
    fn set_last_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    fn last_error(&self) -> String {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Make the connection in the background, retrying until it is made or the store is gone.
fn start_connecting(shared: &Arc<Shared>) {
    if shared.connecting.swap(true, Ordering::AcqRel) {
        return;
    }
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        shared.connecting.store(false, Ordering::Release);
        return;
    };
    /// Clears `connecting` however the task ends (connected, store gone, runtime shut down).
    struct Connecting(Weak<Shared>);
    impl Drop for Connecting {
        fn drop(&mut self) {
            if let Some(shared) = self.0.upgrade() {
                shared.connecting.store(false, Ordering::Release);
            }
        }
    }
    let connecting = Connecting(Arc::downgrade(shared));
    handle.spawn(async move {
        let mut backoff = Duration::from_millis(50);
        loop {
            let Some(shared) = connecting.0.upgrade() else { return };
            match ConnectionManager::new_with_config(shared.client.clone(), shared.config.clone()).await {
                Ok(manager) => {
                    let generation = shared.generations.fetch_add(1, Ordering::AcqRel) + 1;
                    shared.conn.send_replace(Some(Conn { generation, manager }));
                    tracing::debug!("connected to Redis");
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "connecting to Redis failed");
                    shared.set_last_error(e.to_string());
                }
            }
            drop(shared);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    });
}

/// A limit store in Redis. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct RedisStore {
    shared: Arc<Shared>,
    timeout: Duration,
    lease_ttl: Duration,
    check_script: Script,
    adjust_script: Script,
    release_script: Script,
    refresh_script: Script,
    epoch: Instant,
    /// When Redis last answered (ms since `epoch`).
    last_ok_ms: AtomicU64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("timeout", &self.timeout).field("lease_ttl", &self.lease_ttl).finish()
    }
}

impl RedisStore {
    /// A store for `url` (`redis://[user:password@]host:port[/db]`) whose every call gives up
    /// after `timeout`. Fails only for an invalid URL; connecting starts in the background
    /// (at once when called inside a tokio runtime, else on the first call).
    pub fn new(url: &str, timeout: Duration) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Url(e.to_string()))?;
        let timeout = timeout.max(Duration::from_millis(1));
        let config = ConnectionManagerConfig::new()
            // One attempt per reconnection: the limiter's probes pace the retries, so a Redis
            // that comes back is used again within one probe interval.
            .set_number_of_retries(0)
            .set_connection_timeout(timeout.max(Duration::from_millis(500)))
            .set_response_timeout(timeout.max(Duration::from_secs(1)));
        let (conn, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            client,
            config,
            conn,
            connecting: AtomicBool::new(false),
            generations: AtomicU64::new(0),
            last_error: Mutex::new("not connected yet".to_string()),
        });
        start_connecting(&shared);
        Ok(RedisStore {
            shared,
            timeout,
            lease_ttl: DEFAULT_LEASE_TTL,
            check_script: script(CHECK),
            adjust_script: script(ADJUST),
            release_script: script(RELEASE),
            refresh_script: script(REFRESH),
            epoch: Instant::now(),
            last_ok_ms: AtomicU64::new(0),
        })
    }

    /// How long a concurrency lease lives without a refresh (default 60 s); a crashed gw's
    /// slots come back after it. Holders refresh every third of it.
    pub fn with_lease_ttl(mut self, ttl: Duration) -> RedisStore {
        self.lease_ttl = ttl.max(Duration::from_millis(1));
        self
    }

    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether a connection is up (it may still fail on its next call).
    pub fn connected(&self) -> bool {
        self.shared.conn.borrow().is_some()
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The connection, waiting for the background connector until `deadline`.
    async fn connection(&self, deadline: tokio::time::Instant) -> Result<Conn, StoreError> {
        if let Some(c) = self.shared.conn.borrow().clone() {
            return Ok(c);
        }
        start_connecting(&self.shared);
        let mut rx = self.shared.conn.subscribe();
        let waited = match tokio::time::timeout_at(deadline, rx.wait_for(Option::is_some)).await {
            Ok(Ok(c)) => c.clone(),
            _ => None,
        };
        waited.ok_or_else(|| StoreError::Unavailable(self.shared.last_error()))
    }

    /// Run one script with the store's timeout.
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> Result<T, StoreError> {
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(k);
        }
        for a in args {
            invocation.arg(a);
        }
        self.call(|mut manager| async move { invocation.invoke_async::<T>(&mut manager).await }).await
    }

    /// One call on the connection, bounded by the store's timeout; failures sorted into
    /// "Redis is unavailable" and "Redis answered with an error".
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let conn = self.connection(deadline).await?;
        match tokio::time::timeout_at(deadline, f(conn.manager.clone())).await {
            Ok(Ok(v)) => {
                self.last_ok_ms.store(self.elapsed_ms(), Ordering::Relaxed);
                Ok(v)
            }
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
                    Err(StoreError::Unavailable(e.to_string()))
                } else {
                    // Redis answered (with an error): the connection works.
                    self.last_ok_ms.store(self.elapsed_ms(), Ordering::Relaxed);
                    Err(StoreError::Redis(e.to_string()))
                }
            }
            Err(_) => {
                self.timed_out(conn.generation);
                Err(StoreError::Timeout(self.timeout))
            }
        }
    }

    /// A binary value (the response cache's entries), or None.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let cmd = redis::cmd("GET").arg(key).clone();
        self.call(|mut m| async move { cmd.query_async::<Option<Vec<u8>>>(&mut m).await }).await
    }

    /// Store a binary value that expires after `ttl_ms`.
    pub async fn set_bytes(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), StoreError> {
        let cmd = redis::cmd("SET").arg(key).arg(value).arg("PX").arg(ttl_ms.max(1)).clone();
        self.call(|mut m| async move { cmd.query_async::<()>(&mut m).await }).await
    }

    /// A call timed out: when nothing has come back for a while, the connection may be
    /// half-open (no error will ever come), so make a new one.
    fn timed_out(&self, generation: u64) {
        let silent = self.elapsed_ms().saturating_sub(self.last_ok_ms.load(Ordering::Relaxed));
        if silent < ms(STALE_AFTER.max(self.timeout * 4)) {
            return;
        }
        let replaced = self.shared.conn.send_if_modified(|c| match c {
            Some(current) if current.generation == generation => {
                *c = None;
                true
            }
            _ => false,
        });
        if replaced {
            tracing::debug!("Redis silent for {silent} ms: reconnecting");
            self.shared.set_last_error(format!("no answer for {silent} ms, reconnecting"));
            start_connecting(&self.shared);
        }
    }

    /// Check (and, when admitted, charge) all of a request's limits in one atomic round trip,
    /// on Redis's clock.
    pub async fn check(&self, checks: &[LimitCheck]) -> Result<Vec<LimitResult>, StoreError> {
        self.check_clock(checks, String::new()).await
    }

    /// `check` with an explicit clock (ns since the Unix epoch) instead of Redis's: for tests
    /// comparing with the local arithmetic.
    pub async fn check_at(&self, checks: &[LimitCheck], now_ns: u64) -> Result<Vec<LimitResult>, StoreError> {
        self.check_clock(checks, now_ns.to_string()).await
    }

    async fn check_clock(&self, checks: &[LimitCheck], clock: String) -> Result<Vec<LimitResult>, StoreError> {
        if checks.is_empty() {
            return Ok(vec![]);
        }
        let mut keys = Vec::with_capacity(checks.len());
        let mut args = Vec::with_capacity(2 + checks.len() * 5);
        args.push(clock);
        args.push(ms(self.lease_ttl).to_string());
        for c in checks {
            let shadow = if c.shadow { "1" } else { "0" }.to_string();
            match &c.charge {
                Charge::Rate { gcra, .. } | Charge::Tokens { gcra, .. } => {
                    let cost = match &c.charge {
                        Charge::Tokens { cost, .. } => *cost,
                        _ => 1,
                    };
                    keys.push(gcra_key(&c.id, &c.key));
                    args.extend([
                        "g".to_string(),
                        shadow,
                        gcra.interval_ns.to_string(),
                        gcra.tolerance_ns.to_string(),
                        cost.to_string(),
                    ]);
                }
                Charge::Concurrent { max, lease } => {
                    keys.push(slots_key(&c.id, &c.key));
                    args.extend(["c".to_string(), shadow, max.to_string(), member(lease), String::new()]);
                }
            }
        }
        let raw: Vec<i64> = self.run(&self.check_script, &keys, &args).await?;
        if raw.len() != checks.len() * 4 {
            return Err(StoreError::Protocol(format!("{} values for {} limits", raw.len(), checks.len())));
        }
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(checks
            .iter()
            .zip(raw.chunks_exact(4))
            .map(|(c, r)| LimitResult {
                id: c.id.clone(),
                kind: c.charge.kind(),
                shadow: c.shadow,
                allowed: r[0] == 1,
                limit: c.charge.per_window(),
                remaining: n(r[1]),
                retry_after_ns: n(r[2]),
                reset_after_ns: n(r[3]),
                fallback: false,
            })
            .collect())
    }

    /// Reconcile a token reservation: `delta` more units used than reserved (negative: fewer).
    pub async fn adjust(&self, id: &str, key: &str, gcra: Gcra, delta: i64) -> Result<(), StoreError> {
        self.adjust_clock(id, key, gcra, delta, String::new()).await
    }

    /// `adjust` with an explicit clock (tests).
    pub async fn adjust_at(&self, id: &str, key: &str, gcra: Gcra, delta: i64, now_ns: u64) -> Result<(), StoreError> {
        self.adjust_clock(id, key, gcra, delta, now_ns.to_string()).await
    }

    async fn adjust_clock(&self, id: &str, key: &str, gcra: Gcra, delta: i64, clock: String) -> Result<(), StoreError> {
        let args = [clock, gcra.interval_ns.to_string(), delta.to_string()];
        let _: i64 = self.run(&self.adjust_script, &[gcra_key(id, key)], &args).await?;
        Ok(())
    }

    /// Give back a concurrency slot taken under `lease`.
    pub async fn release(&self, id: &str, key: &str, lease: &str) -> Result<(), StoreError> {
        let args = [String::new(), member(lease)];
        let _: i64 = self.run(&self.release_script, &[slots_key(id, key)], &args).await?;
        Ok(())
    }

    /// Push the expiry of slots still held: (limit id, counter key, lease) each.
    pub async fn refresh(&self, slots: &[(Arc<str>, String, String)]) -> Result<(), StoreError> {
        if slots.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = slots.iter().map(|(id, key, _)| slots_key(id, key)).collect();
        let mut args = vec![String::new(), ms(self.lease_ttl).to_string()];
        args.extend(slots.iter().map(|(_, _, lease)| member(lease)));
        let _: i64 = self.run(&self.refresh_script, &keys, &args).await?;
        Ok(())
    }

    /// Slots in use for a concurrency counter, expired leases not counted (operator view, tests).
    pub async fn held(&self, id: &str, key: &str) -> Result<u64, StoreError> {
        const HELD: &str = "return redis.call('ZCOUNT', KEYS[1], '(' .. NOW_MS, '+inf')";
        let n: i64 = self.run(&script(HELD), &[slots_key(id, key)], &[String::new()]).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// One round trip to see whether Redis answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: i64 = self.run(&script("return 1"), &[], &[String::new()]).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_hash_tag_and_long_names_are_hashed() {
        let k = gcra_key("rps", "tenant-a");
        assert_eq!(k, "gw:{lim}:r:rps\u{1f}tenant-a");
        assert_eq!(slots_key("c", "t"), "gw:{lim}:c:c\u{1f}t");
        let long = "x".repeat(500);
        let h = gcra_key("rps", &long);
        assert!(h.starts_with("gw:{lim}:r#"), "{h}");
        assert_eq!(h.len(), KEY_PREFIX.len() + 2 + 64);
        assert_ne!(h, gcra_key("rps", &"x".repeat(501)));
        assert_eq!(member("req-1"), "req-1");
        assert_eq!(member(&long).len(), 65);
    }

    #[test]
    fn an_invalid_url_is_refused_and_a_down_redis_is_not() {
        assert!(matches!(RedisStore::new("not a url", Duration::from_millis(50)), Err(StoreError::Url(_))));
        // Nothing listens on port 1: construction still succeeds, outside a runtime too.
        let store = RedisStore::new("redis://127.0.0.1:1/", Duration::from_millis(50));
        assert!(store.is_ok());
    }

    #[tokio::test]
    async fn calls_to_a_down_redis_fail_within_the_timeout() {
        let store = RedisStore::new("redis://127.0.0.1:1/", Duration::from_millis(100)).expect("a valid URL");
        let check = LimitCheck {
            id: "r".into(),
            key: "k".into(),
            shadow: false,
            charge: Charge::Rate { gcra: Gcra::new(10, 1_000_000_000, None), count: 10 },
        };
        let started = Instant::now();
        let r = store.check(&[check]).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_)) | Err(StoreError::Timeout(_))), "{r:?}");
        assert!(started.elapsed() < Duration::from_millis(600), "{:?}", started.elapsed());
    }
}
