// Package limit enforces a receiver's concurrency and rate limits in Redis,
// so that they hold across every worker process sharing it.
//
// One Lua script decides each attempt atomically, on Redis's clock (so the
// workers' clocks do not matter):
//
//   - the concurrency limit is a semaphore: a sorted set of holders scored by
//     the expiry of their lease, so a holder that dies without releasing
//     frees its slot when its lease runs out;
//   - the rate limit is a token bucket: a hash of the tokens left and when
//     they were counted, refilled at the rate up to the burst;
//   - the tasks that were turned away wait in line: a sorted set of their
//     IDs scored by when they first waited. A task that has not waited takes
//     no slot or token while others wait, and each waiting task is told how
//     long its turn is likely to take, so that a backlog comes back spread
//     over time instead of all at once.
//
// A run that gets in takes a slot and a token together; one that does not
// takes neither.
package limit

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Limits are one receiver's limits; a zero field means no such limit.
type Limits struct {
	Concurrency int     // runs at once
	Rate        float64 // runs per second
	Burst       int     // runs at once after an idle spell; at least 1 with a Rate
}

// Limited reports whether l limits anything.
func (l Limits) Limited() bool { return l.Concurrency > 0 || l.Rate > 0 }

// Key names one receiver's limit: registries on different schemas never
// share one.
type Key struct{ Schema, Signal, Receiver string }

// prefix returns the common prefix of the key's Redis keys. The hash tag
// keeps them in one Redis Cluster slot, as one script needs.
func (k Key) prefix() string {
	return "signals:limit:{" + k.Schema + ":" + k.Signal + ":" + k.Receiver + "}:"
}

// Limiter takes and gives back slots and tokens. It is safe for concurrent
// use and does not own its client.
type Limiter struct{ rdb redis.UniversalClient }

// New returns a Limiter on rdb, which the caller closes.
func New(rdb redis.UniversalClient) *Limiter { return &Limiter{rdb: rdb} }

// Permit is a run's slot, which Release gives back. The zero Permit holds
// nothing.
type Permit struct {
	l      *Limiter
	key    Key
	holder string
	start  time.Time
}

// Held reports whether the permit holds a slot or token: false for the
// zero Permit.
func (p Permit) Held() bool { return p.l != nil }

// Release gives the permit's slot back, if it holds one, and records how
// long it was held, which shapes the waits Acquire suggests.
func (p Permit) Release(ctx context.Context) error {
	if p.l == nil {
		return nil
	}
	held := time.Since(p.start).Milliseconds()
	pre := p.key.prefix()
	err := releaseScript.Run(ctx, p.l.rdb, []string{pre + "holders", pre + "meta"}, p.holder, held).Err()
	if err != nil {
		return fmt.Errorf("release limit slot: %w", err)
	}
	return nil
}

// Acquire tries to take a slot and a token for one run of task. It returns
// the permit and zero if the run may go ahead; otherwise a zero Permit and
// how long the task is likely to wait for its turn (at least 1ms), without
// having taken anything. lease bounds how long a slot stays taken if
// Release is never called.
func (l *Limiter) Acquire(ctx context.Context, key Key, task string, lim Limits, lease time.Duration) (Permit, time.Duration, error) {
	holder := task + ":" + strconv.FormatInt(time.Now().UnixNano(), 36)
	pre := key.prefix()
	burst := lim.Burst
	if lim.Rate > 0 && burst < 1 {
		burst = 1
	}
	res, err := acquireScript.Run(ctx, l.rdb,
		[]string{pre + "holders", pre + "bucket", pre + "waiting", pre + "return", pre + "meta"},
		task, holder, lim.Concurrency, strconv.FormatFloat(lim.Rate, 'g', -1, 64), burst,
		max(lease.Milliseconds(), 1), waitGrace.Milliseconds(),
	).Int64Slice()
	if err != nil {
		return Permit{}, 0, fmt.Errorf("acquire limit slot: %w", err)
	}
	if len(res) != 2 {
		return Permit{}, 0, fmt.Errorf("acquire limit slot: script returned %v", res)
	}
	if res[0] == 1 {
		return Permit{l: l, key: key, holder: holder, start: time.Now()}, 0, nil
	}
	return Permit{}, time.Duration(max(res[1], 1)) * time.Millisecond, nil
}

// waitGrace is how long past its expected return a waiting task keeps its
// place in line: one that does not come back by then (dead, deleted, or its
// worker gone) stops counting as waiting.
const waitGrace = 10 * time.Second

// defaultHoldMS is how long a run is assumed to hold its slot before any
// run has been measured.
const defaultHoldMS = 100

// acquireScript decides one attempt.
//
// KEYS: 1 holders (zset holder → lease expiry ms), 2 bucket (hash tokens,
// ts), 3 waiting (zset task → first wait ms), 4 return (zset task →
// expected return ms), 5 meta (hash hold: average hold ms).
// ARGV: 1 task, 2 holder, 3 concurrency (0: none), 4 rate per second (0:
// none), 5 burst, 6 lease ms, 7 grace ms.
//
// Returns {1, 0} when the run may go ahead (its slot and token taken), or
// {0, wait ms}.
var acquireScript = redis.NewScript(fmt.Sprintf(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local task, holder = ARGV[1], ARGV[2]
local conc, rate, burst = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local lease, grace = tonumber(ARGV[6]), tonumber(ARGV[7])

-- Forget waiting tasks that did not come back in time.
local gone = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
if #gone > 0 then
  redis.call('ZREM', KEYS[4], unpack(gone))
  redis.call('ZREM', KEYS[3], unpack(gone))
end

local free = true
local holders = 0
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  holders = redis.call('ZCARD', KEYS[1])
  if holders >= conc then free = false end
end
local tokens = 0
if rate > 0 then
  local b = redis.call('HMGET', KEYS[2], 'tokens', 'ts')
  tokens = tonumber(b[1]) or burst
  local ts = tonumber(b[2]) or now
  if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate / 1000) end
  if tokens < 1 then free = false end
end

-- A task that has not waited yet goes behind the ones that have.
local rank = redis.call('ZRANK', KEYS[3], task)
if rank == false and redis.call('ZCARD', KEYS[3]) > 0 then free = false end

if free then
  if conc > 0 then
    redis.call('ZADD', KEYS[1], now + lease, holder)
    redis.call('PEXPIRE', KEYS[1], lease + grace)
  end
  if rate > 0 then
    redis.call('HSET', KEYS[2], 'tokens', tostring(tokens - 1), 'ts', now)
    redis.call('PEXPIRE', KEYS[2], math.ceil(burst / rate * 1000) + grace)
  end
  if rank ~= false then
    redis.call('ZREM', KEYS[3], task)
    redis.call('ZREM', KEYS[4], task)
  end
  return {1, 0}
end

if rank == false then
  redis.call('ZADD', KEYS[3], now, task)
  rank = redis.call('ZCARD', KEYS[3]) - 1
end
-- rank tasks wait ahead of this one: it runs when they and it have had
-- their tokens, and when slots have freed for them and it.
local wait = 1
if rate > 0 then
  wait = math.max(wait, math.ceil((rank + 1 - tokens) * 1000 / rate))
end
if conc > 0 and holders >= conc then
  local hold = tonumber(redis.call('HGET', KEYS[5], 'hold')) or %d
  local rounds = math.floor(rank / conc) + 1
  local soonest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local cap = lease
  if soonest[2] then cap = tonumber(soonest[2]) - now + (rounds - 1) * hold end
  wait = math.max(wait, math.min(rounds * hold, cap))
end
wait = math.ceil(wait)
redis.call('ZADD', KEYS[4], now + wait + grace, task)
redis.call('PEXPIRE', KEYS[3], wait + 2 * grace)
redis.call('PEXPIRE', KEYS[4], wait + 2 * grace)
return {0, wait}
`, defaultHoldMS))

// releaseScript gives a slot back and folds its hold time into the
// average.
//
// KEYS: 1 holders, 2 meta. ARGV: 1 holder, 2 held ms.
var releaseScript = redis.NewScript(`
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  local held = tonumber(ARGV[2])
  local avg = tonumber(redis.call('HGET', KEYS[2], 'hold'))
  if avg then avg = avg * 0.8 + held * 0.2 else avg = held end
  redis.call('HSET', KEYS[2], 'hold', tostring(math.max(1, avg)))
  redis.call('PEXPIRE', KEYS[2], 86400000)
end
return 1
`)

// Lease is how long a run's slot stays taken if its worker never releases
// it: the receiver's timeout, past which the run's ctx is canceled, and a
// margin for the run to return and release.
func Lease(timeout time.Duration) time.Duration {
	return timeout + leaseMargin
}

// leaseMargin is how long past its timeout a run may take to return.
const leaseMargin = 10 * time.Second
