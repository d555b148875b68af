"""The two Lua scripts a fleet shares pacing and the retry budget through, and their arguments.

Each runs atomically in Redis, on Redis's clock (``redis.call('TIME')``): the processes of a fleet
have no common clock, so every time they exchange is a duration from "now", and Redis alone says
when now is. All of an endpoint's state is one hash (one key: one slot in a cluster), expiring
when unused, so an endpoint nobody calls leaves nothing behind.

``RESERVE`` (one round trip per attempt, and only while the fleet paces the endpoint) books a
send slot for a request and its tokens together, GCRA-style (the generic cell rate algorithm:
a "theoretical arrival time" per resource, no timer and no refill loop)::

    KEYS[1]  the endpoint's hash
    ARGV     request cost (1), token cost (>= 0), latest (ms from now; < 0: none), max gate (ms),
             disengage after (ms), joining (1: the process's first call to the endpoint),
             horizon (ms; 0: none)
    reply    {wait in µs, or NOT_PACED (go at once, nothing booked) or TOO_LATE (the slot comes
              after ``latest``: nothing booked), ms until the fleet stops pacing, 1 if booked
              (0: the slot comes beyond ``horizon``; nothing booked, ask again after the wait)}

The slot is the earliest time at or after now, the gate (a ``Retry-After`` shared by everyone),
the request schedule (``rate`` per second, ``burst`` at once; 1: evenly spaced) and the token
schedule (``trate`` tokens per second, ``tburst`` at once). A slot beyond ``max gate`` is not
booked: the caller waits ``max gate`` (no caller waits longer than the policy lets a server make
it wait). Nor is a slot beyond ``horizon`` (``HORIZON``): its caller asks again when it would be
within it, so that a rate changed meanwhile (learnt, raised, lowered) reaches every caller that
waits, not only those who come after a queue booked at the old one. A slot that made its caller
wait keeps the fleet pacing for ``disengage after``.

What the fleet learnt outlives its pacing: while the fleet paces, each report marks the hash's
rates (requests and tokens) warm for ``WARM`` seconds. A process's first call to an endpoint
(``joining``) that finds them warm while the fleet no longer paces starts pacing again at them:
a process starting, or a pod joining, sends no first wave of its own into a limit the fleet
already knows.

``REPORT`` (sent by each process's reporter thread, every ``REPORT_SPAN`` while an endpoint is
used, at once after a 429; never by a caller) adds what the process saw since its last report
and reads back what the fleet saw::

    KEYS[1]  the endpoint's hash
    ARGV     requests sent, retries sent, 429s, gate (ms from now; < 0: none), hinted request
             rate (< 0: none), successes, hinted token rate (< 0: none), hinted token burst,
             then the constants of :data:`REPORT_CONSTANTS`
    reply    {ms until the fleet stops pacing (0: not paced), requests and retries over the
              budget window, request rate x 1000}

Requests and retries are counted per second of Redis's clock over ``window`` seconds (the
budget's sliding window), successes per report span (``REPORT_SPAN``) over two seconds. The rate
is learnt as one process's limiter learns it: the highest header rate the engagement heard; else
a 429 to an unpaced endpoint starts the schedule at a share of the fleet's send rate over the last
second or so (over half a second at least: a first wave is a burst of concurrent calls, not a
rate; or since the fleet began to use the endpoint, if later), raised by the sends the first
waves of processes yet to hear of it report with their 429s within ``REPORT_SPAN``. Those 429s
lower nothing. Then the fleet measures (``MEASURE_AFTER``, ``MEASURE``): 429s all along say its
rate was over the limit, and what got through meanwhile is the limit; the schedule goes on from
as far under it as one process's trial of whether its rate matters sends (``trial``: each
process's limiter judges the fleet's schedule as if its own, and a schedule nearer the limit
fails that trial now and then, after which that process reports no 429 to the fleet); too few
429s say the rate was under it. A later 429 (at most once per ``guard``; not for slots booked
before the last decrease) lowers the rate a margin (``backoff``) under where the
limit was met, the fleet's success rate over the last second, which it then probes towards:
additively, or, near it, by a small share per second (a bucket's burst hides a small excess for
seconds: a fast climb would overshoot far before the next 429 said so). Unlike one process's
limiter, the fleet takes the success rate as where the limit was met even above its own rate: its
counts arrive a report late, and the 429s of slots booked at a higher rate would otherwise pin it
under the limit.
"""

from __future__ import annotations

from ._pacing import (
    DECREASE_FACTOR,
    DECREASE_GUARD,
    DISENGAGE_AFTER,
    ENGAGE_FACTOR,
    HINT_MARGIN,
    INCREASE_FRACTION,
    INCREASE_PER_SUCCESS,
    MIN_RATE,
    START_FLOOR,
)
from ._pacing_evidence import BACKOFF, PROBE_BAND, PROBE_PER_SECOND, TRIAL_MARGIN

__all__ = ["HORIZON", "NOT_PACED", "REPORT", "REPORT_CONSTANTS", "RESERVE", "TOO_LATE", "WINDOW"]

NOT_PACED = -2
TOO_LATE = -1
WINDOW = 10
"""Seconds the fleet's retry budget counts over, as :class:`~._budget.RetryBudget`'s window."""
HORIZON = 1000
"""Milliseconds ahead that a slot is booked at most. Further back in the queue, a caller asks again
when its slot would be within them: one round trip more for it, and a queue that moves at the
rate the fleet paces at now rather than at the one it had when the caller came (a fleet that
engaged at a guess far under the limit crawled at it for seconds). A second: a queue at the
rate a fleet settles at is rarely longer, so callers seldom ask twice."""
REPORT_SPAN = 100
"""Milliseconds between a process's reports, at most (its reporter's ``REPORT_EVERY``): what a
report carries happened within them before it, so the fleet's first report counts successes from
that long before; and a process hears that the fleet paces within them after an engagement, so
until then its 429s (it sent on its own) lower nothing. Successes are counted per span too: the
fleet's success rate is read over windows that start where its rules say, not at a second's."""
MEASURE_AFTER = 200
"""Milliseconds after every process has heard of an engagement without hints (``REPORT_SPAN``)
before the fleet measures what gets through: a first wave's refused callers sleep their first
backoff (up to half a second by default) before they ask again, and until then what gets
through is what the few others asked for, not the limit."""
MEASURE = 400
"""Milliseconds over which the fleet then measures what gets through at the rate it engaged at:
the limit, if 429s came all along, and so the rate the schedule goes on from."""
MEASURED_OVER = 0.1
"""429s per success while measuring that say the fleet sent over the limit all along (fewer:
stragglers, a process's first wave that came late; the rate was under it)."""
START_INCREASE = 1.0
"""Requests per second each success adds until an engagement without hints has met the limit
(``INCREASE_PER_SUCCESS`` after): it started from a guess, what one process's first wave sent
when processes start apart, which a slower climb would take seconds to correct."""
KEEP = 60_000
"""Milliseconds an endpoint's hash outlives its last use (or its rates' warmth, if later)."""
WARM = 300_000
"""Milliseconds the rates the fleet paced at are remembered for processes that join: minutes,
as a limit stays what it was (a deploy, a restart, a scaled-out pod come within them)."""

REPORT_CONSTANTS: tuple[float, ...] = (
    WINDOW,
    DISENGAGE_AFTER * 1000,
    START_FLOOR,
    ENGAGE_FACTOR,
    MIN_RATE,
    DECREASE_FACTOR,
    DECREASE_GUARD * 1000,
    INCREASE_PER_SUCCESS,
    INCREASE_FRACTION,
    HINT_MARGIN,
    KEEP,
    WARM,
    BACKOFF,
    PROBE_PER_SECOND,
    *PROBE_BAND,
    REPORT_SPAN,
    MEASURE_AFTER,
    MEASURE,
    MEASURED_OVER,
    START_INCREASE,
    TRIAL_MARGIN,
)

RESERVE = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local key = KEYS[1]
local s = redis.call('HMGET', key, 'engaged', 'rate', 'burst', 'tat', 'trate', 'tburst', 'ttat',
                     'gate', 'warm')
local engaged = tonumber(s[1]) or 0
local rate = tonumber(s[2]) or 0
local cost, tcost = tonumber(ARGV[1]), tonumber(ARGV[2])
local latest, maxgate, disengage = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local horizon = tonumber(ARGV[7]) or 0
if rate <= 0 or (engaged <= now and (tonumber(ARGV[6]) ~= 1 or (tonumber(s[9]) or 0) <= now)) then
  return {{{NOT_PACED}, 0, 0}}
end
if engaged <= now then
  -- a process joins a fleet that paced lately: pace again at once, at the rates it learnt
  engaged = now + disengage
  redis.call('HSET', key, 'engaged', engaged)
end
local interval = cost * 1000 / rate
local tolerance = math.max(0, (tonumber(s[3]) or 1) - 1) * 1000 / rate
local tat = math.max(tonumber(s[4]) or 0, now)
local start = math.max(now, tonumber(s[8]) or 0, tat - tolerance)
local trate, ttat, tinterval = tonumber(s[5]) or 0, 0, 0
local tburst = tonumber(s[6]) or 0
if trate > 0 and tcost > 0 and tburst > 0 then
  -- no request costs more than the bucket holds: an estimate beyond it (a huge max_tokens the
  -- server will refuse anyway) must not book the schedule far into the future for everyone
  tcost = math.min(tcost, tburst)
  tinterval = tcost * 1000 / trate
  local ttolerance = math.max(0, tburst * 1000 / trate - tinterval)
  ttat = math.max(tonumber(s[7]) or 0, now)
  start = math.max(start, ttat - ttolerance)
end
local wait = start - now
if latest >= 0 and wait >= latest then
  return {{{TOO_LATE}, math.floor(engaged - now), 0}}
end
if wait > maxgate then
  engaged = math.max(engaged, now + disengage)
  redis.call('HSET', key, 'engaged', engaged)
  if latest >= 0 and maxgate >= latest then
    return {{{TOO_LATE}, math.floor(engaged - now), 0}}
  end
  return {{math.floor(maxgate * 1000), math.floor(engaged - now), 1}}
end
if horizon > 0 and wait > horizon then
  engaged = math.max(engaged, now + disengage)
  redis.call('HSET', key, 'engaged', engaged)
  return {{math.floor((wait - horizon) * 1000), math.floor(engaged - now), 0}}
end
redis.call('HSET', key, 'tat', math.max(tat, start) + interval)
if tinterval > 0 then
  redis.call('HSET', key, 'ttat', math.max(ttat, start) + tinterval)
end
if wait > 1 then
  engaged = math.max(engaged, now + disengage)
  redis.call('HSET', key, 'engaged', engaged)
end
redis.call('PEXPIRE', key, math.max({KEEP}, math.floor((tonumber(s[9]) or 0) - now)))
return {{math.floor(wait * 1000), math.floor(engaged - now), 1}}
"""

REPORT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local key = KEYS[1]
local a = {}
for i = 1, #ARGV do a[i] = tonumber(ARGV[i]) end
local sent, retried, throttled, gate, hinted = a[1], a[2], a[3], a[4], a[5]
local succeeded, thinted, tburst = a[6], a[7], a[8]
local window, disengage, floor, engage, minrate = a[9], a[10], a[11], a[12], a[13]
local decrease, guard, increase, fraction, margin, keep = a[14], a[15], a[16], a[17], a[18], a[19]
local warmth, backoff, probe, low, high, lag = a[20], a[21], a[22], a[23], a[24], a[25]
local settle, measuring, overshare, start, trial = a[26], a[27], a[28], a[29], a[30]
local second = math.floor(now / 1000)
local tick = math.floor(now / lag)
local per_second = 1000 / lag
redis.call('HSETNX', key, 'began', now)
if sent > 0 then redis.call('HINCRBY', key, 'r:' .. second, sent) end
if retried > 0 then redis.call('HINCRBY', key, 'x:' .. second, retried) end
if succeeded > 0 then redis.call('HINCRBY', key, 's:' .. tick, succeeded) end
local requests, retries, recent, ok = 0, 0, 0, 0
local state, successes = {}, {}
local fields = redis.call('HGETALL', key)
for i = 1, #fields, 2 do
  local kind, at = string.match(fields[i], '^([rxs]):(%d+)$')
  if kind == nil then
    state[fields[i]] = tonumber(fields[i + 1])
  elseif kind == 's' then
    -- successes per report span (a ``tick``), kept two seconds: rates, not the budget
    if tonumber(at) <= tick - 2 * per_second then
      redis.call('HDEL', key, fields[i])
    else
      successes[#successes + 1] = {tonumber(at), tonumber(fields[i + 1])}
      if tonumber(at) >= tick - per_second then ok = ok + tonumber(fields[i + 1]) end
    end
  elseif tonumber(at) <= second - window then
    redis.call('HDEL', key, fields[i])
  elseif kind == 'r' then
    requests = requests + tonumber(fields[i + 1])
    if tonumber(at) >= second - 1 then recent = recent + tonumber(fields[i + 1]) end
  else
    retries = retries + tonumber(fields[i + 1])
  end
end
local engaged = state['engaged'] or 0
local rate = state['rate'] or 0
local last = state['decreased'] or 0
local ceiling = state['ceiling'] or 0
local measure = state['measure'] or 0
-- successes per second over the last second and this tick so far (this report's included), or
-- since the fleet began to use the endpoint (its first report's news included), if later
local since = (now + lag - (state['began'] or now)) / 1000
local span = math.max(0.25, math.min((now - (tick - per_second) * lag) / 1000, since))
local sends = math.max(0.5, math.min(1 + now / 1000 - second, since))
local succeeding = 0
if ok >= 5 then succeeding = ok / span end
if throttled > 0 then
  if engaged <= now or rate <= 0 then
    rate = math.max(floor, recent / sends * engage)
    last, ceiling, state['hinted'], measure = now, 0, 0, now + lag + settle
    -- the 429s of processes that have yet to hear the fleet paces are no news; then the fleet
    -- measures what gets through
    redis.call('HSET', key, 'tat', now, 'ttat', now, 'hold', now + lag, 'over', 0, 'found', 0)
  elseif measure > 0 then
    if now >= measure then
      redis.call('HINCRBY', key, 'over', throttled)
    elseif now < (state['hold'] or 0) and hinted < 0 then
      -- the first wave's other processes: what they sent is news of where to start
      rate = math.max(rate, recent / sends * engage)
    end
  elseif hinted < 0 and now >= math.max(last + guard, state['hold'] or 0) then
    -- the limit was met where what got through came (else at the rate), less a margin;
    -- not again for the 429s of slots booked before now (they keep the old spacing)
    ceiling = rate
    if succeeding > 0 then ceiling = succeeding end
    rate = math.max(minrate, math.min(rate, ceiling) * backoff)
    last = now
    redis.call('HSET', key, 'hold', math.max(now, state['tat'] or 0), 'found', 1)
  end
  engaged = math.max(engaged, now + disengage)
  if gate >= 0 then
    redis.call('HSET', key, 'gate', math.max(state['gate'] or 0, now + gate))
  end
elseif engaged > now and succeeded > 0 and hinted < 0 and measure <= 0
       and now - last >= guard then
  -- near where the limit was met, a slow probe by time; else additive per success, a larger
  -- step until the engagement has met the limit (it started from a guess)
  if ceiling > 0 and rate > high * ceiling then ceiling = 0 end
  if ceiling > 0 and rate >= low * ceiling then
    local grown = state['grown'] or now
    rate = rate + rate * probe * math.min(1, math.max(0, now - grown) / 1000)
  else
    local step = increase
    if (state['found'] or 0) == 0 then step = start end
    rate = rate + succeeded * math.max(step, rate * fraction)
  end
end
if measure > 0 and (hinted >= 0 or (state['hinted'] or 0) > 0 or engaged <= now) then
  measure = 0  -- the headers say the rate
elseif measure > 0 and now >= measure + measuring then
  -- 429s all along: what got through is the limit; none: the rate was under it (AIMD goes on)
  local from = math.ceil(measure / lag)
  local through = 0
  for _, counted in ipairs(successes) do
    if counted[1] >= from then through = through + counted[2] end
  end
  local over = tonumber(redis.call('HGET', key, 'over')) or 0
  if over >= through * overshare and through >= 5 then
    ceiling = through * 1000 / (now - from * lag)
    rate = math.max(minrate, ceiling * trial)
    last = now
    -- the server's bucket is empty after a window over the limit: until it has refilled a
    -- little, the 429s of sends that bunch (a busy machine) are no news of the rate
    redis.call('HSET', key, 'hold', math.max(now + measuring + lag, state['tat'] or 0), 'found', 1)
  end
  measure = 0
end
if engaged > now then
  -- the highest header rate of the engagement: each process's is a lower bound (a count
  -- floored, over the time to refill it), the lower the emptier its bucket when it read it
  local highest = math.max(state['hinted'] or 0, hinted)
  if highest > 0 then rate = math.max(minrate, highest * margin) end
  if thinted > 0 then
    redis.call('HSET', key, 'trate', thinted * margin, 'tburst', tburst)
  end
  redis.call('HSET', key, 'engaged', engaged, 'rate', rate, 'decreased', last, 'warm',
             now + warmth, 'grown', now, 'ceiling', ceiling, 'hinted', highest,
             'measure', measure)
  state['warm'] = now + warmth
end
redis.call('PEXPIRE', key, math.max(keep, math.floor((state['warm'] or 0) - now)))
local left = 0
if engaged > now then left = math.floor(engaged - now) end
return {left, requests, retries, math.floor(rate * 1000)}
"""
