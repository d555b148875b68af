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
             horizon (ms; 0: none), whole (1: the same send was refused for its tokens; at a
             found token rate it books all of them, ``REFUSED_SPAN`` of the rate at most)
    reply    {wait in µs, or NOT_PACED (go at once, nothing booked) or TOO_LATE (the slot comes
              after ``latest``: nothing booked), ms until the fleet stops pacing, 1 if booked
              (0: the slot comes beyond ``horizon``; nothing booked, ask again after the wait),
              1 if the token rate the fleet found booked the tokens (the process then books
              none at a rate it found itself)}

The slot is the earliest time at or after now, the gate (a ``Retry-After`` shared by everyone),
the request schedule (``rate`` per second, ``burst`` at once; 1: evenly spaced) and the token
schedule (``trate`` tokens per second, ``tburst`` at once: a header's rate while requests are
paced; else ``frate``, ``fburst``, the one the fleet found from its answers,
``_fleet_token_finder``, while it paces tokens, ``tengaged``). A slot beyond ``max gate`` is not
booked: the caller waits ``max gate`` (no caller waits longer than the policy lets a server make
it wait). Nor is a slot beyond ``horizon`` (``HORIZON``): its caller asks again when it would be
within it, so that a rate changed meanwhile (learnt, raised, lowered) reaches every caller that
waits, not only those who come after a queue booked at the old one. A slot that made its caller
wait keeps the fleet pacing for ``disengage after``. While the fleet takes its reference (see
``REPORT``), the request schedule is left out: the gate and the token schedule still apply.

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
             tokens answers used beyond what their sends booked, token 429s no header rate
             explains, tokens of the successes to sends that reserved tokens, and how many, then
             the constants of :data:`REPORT_CONSTANTS`
    reply    {ms until the fleet stops pacing (0: not paced), requests and retries over the
              budget window, request rate x 1000, ms until its verdict that the 429s do not
              depend on its rate ends (0: none), the same for its tokens (0: none)}

Requests and retries are counted per second of Redis's clock over ``window`` seconds (the
budget's sliding window), successes per report span (``REPORT_SPAN``) over two seconds. The rate
is learnt as one process's limiter learns it: the highest header rate the engagement heard; else
from the answers, in the fleet's own counts (while it paces, every process reports every 429,
whatever its own limiter judged):

- the reference: a 429 to an unpaced endpoint engages the fleet, which first measures what it
  sends unpaced (the gates and the token schedule alone), as one process's trial does; header
  rates, of requests or of tokens, make all that follows needless;
- far over a limit (429s ``far over`` times the successes, once a few successes are in: a 429
  comes back at once, a success after the latency), it paces at once, at a share of its send rate
  over the last second or so (over half a second at least: a first wave is a burst of concurrent
  calls, not a rate; or since the fleet began to use the endpoint, if later), raised by the sends
  the first waves of processes reported meanwhile. Then it measures (``MEASURE_AFTER``,
  ``MEASURE``): 429s all along say its rate was over the limit, and what got through meanwhile
  is the limit; the schedule goes on from ``trial`` of it, and the answers to it are judged as a
  trial's (most answers refused by a limit shared with others look far over a limit too), early
  once their 429s are clearly too many for a fall by half; too few 429s say the rate was under it;
- else, once the reference has answers enough for a verdict, the trial: ``trial`` of the rate the
  successes came at, with neither decrease nor growth. Against a limit as many get through and
  the 429s vanish: the fleet paces on from a margin (``backoff``) under that rate. If the 429
  fraction did not fall (by half, and by more than noise explains), the 429s do not depend on the
  fleet's rate: it stands aside (no pacing, no join paced, no 429 engaging it) for
  ``independent``;
- whichever way, should the rate later fall under ``unhelped`` of the rate that got through
  unpaced, or measured, while the 429 fraction did not fall, slowing did not help: it stands aside.

A later 429 (at most once per ``guard``; not for slots booked before the last decrease) lowers the
rate a margin (``backoff``) under where the limit was met, the fleet's success rate over the last
second, which it then probes towards: additively, or, near it, by a small share per second (a
bucket's burst hides a small excess for seconds: a fast climb would overshoot far before the next
429 said so). Unlike one process's limiter, the fleet takes the success rate as where the limit
was met even above its own rate: its counts arrive a report late, and the 429s of slots booked at
a higher rate would otherwise pin it under the limit.
"""

from __future__ import annotations

from ._fleet_token_finder import TOKEN_CONSTANTS, TOKEN_FINDER
from ._pacing import (
    DECREASE_FACTOR,
    DECREASE_GUARD,
    DISENGAGE_AFTER,
    ENGAGE_FACTOR,
    FLOOR_MIN_SPAN,
    HINT_MARGIN,
    INCREASE_FRACTION,
    INCREASE_PER_SUCCESS,
    MIN_RATE,
    START_FLOOR,
)
from ._pacing_evidence import (
    BACKOFF,
    BUCKET,
    FAR_OVER,
    HELD_MIN_ANSWERS,
    INDEPENDENT_HOLD,
    PROBE_BAND,
    PROBE_PER_SECOND,
    REFERENCE_MIN_ANSWERS,
    TRIAL_EVIDENCE,
    TRIAL_KEPT,
    TRIAL_LAG,
    TRIAL_MARGIN,
    TRIAL_MIN_ANSWERS,
    TRIAL_RESIDUE,
    TRIAL_TIMEOUT,
    TRIAL_WINDOW,
    UNHELPED_SHARE,
)
from ._token_pacing import REFUSED_SPAN

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
    TRIAL_KEPT,
    TRIAL_EVIDENCE,
    TRIAL_MIN_ANSWERS,
    TRIAL_TIMEOUT * 1000,
    UNHELPED_SHARE,
    INDEPENDENT_HOLD * 1000,
    FAR_OVER,
    REFERENCE_MIN_ANSWERS,
    TRIAL_RESIDUE,
    TRIAL_LAG * 1000,
    FLOOR_MIN_SPAN * 1000,
    TRIAL_WINDOW * BUCKET * 1000 * 0.9,
    HELD_MIN_ANSWERS,
    *TOKEN_CONSTANTS,
)

RESERVE = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local key = KEYS[1]
local s = redis.call('HMGET', key, 'engaged', 'rate', 'burst', 'tat', 'trate', 'tburst', 'ttat',
                     'gate', 'warm', 'ref', 'tengaged', 'frate', 'fburst')
local engaged = tonumber(s[1]) or 0
local rate = tonumber(s[2]) or 0
local cost, tcost = tonumber(ARGV[1]), tonumber(ARGV[2])
local latest, maxgate, disengage = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local horizon = tonumber(ARGV[7]) or 0
local trate, tburst = tonumber(s[5]) or 0, tonumber(s[6]) or 0
local tengaged = tonumber(s[11]) or 0
-- a token rate the fleet found paces while it is engaged; a header's, while requests are paced
local frate, fburst = tonumber(s[12]) or 0, tonumber(s[13]) or 0
local tpaced = frate > 0 and fburst > 0 and tengaged > now
local rpaced = rate > 0 and (engaged > now
                             or (tonumber(ARGV[6]) == 1 and (tonumber(s[9]) or 0) > now))
if not (rpaced or tpaced) then
  -- still engaged (the fleet measures its token rate, say): the caller goes on asking
  return {{{NOT_PACED}, math.max(0, math.floor(math.max(engaged, tengaged) - now)), 0, 0}}
end
if rpaced and engaged <= now then
  -- a process joins a fleet that paced lately: pace again at once, at the rates it learnt
  engaged = now + disengage
  redis.call('HSET', key, 'engaged', engaged)
end
local held_by_tokens = false
local function keep_pacing()
  -- each engagement is kept by the waits it made
  if rpaced then
    engaged = math.max(engaged, now + disengage)
    redis.call('HSET', key, 'engaged', engaged)
  end
  if tpaced and held_by_tokens then
    tengaged = math.max(tengaged, now + disengage)
    redis.call('HSET', key, 'tengaged', tengaged)
  end
end
local function left() return math.floor(math.max(engaged, tengaged) - now) end
-- while the fleet measures what gets through unpaced (its reference), or paces tokens alone,
-- no request schedule
local measuring = (tonumber(s[10]) or 0) > 0 or not rpaced
local interval = cost * 1000 / rate
local tolerance = math.max(0, (tonumber(s[3]) or 1) - 1) * 1000 / rate
local tat = math.max(tonumber(s[4]) or 0, now)
local start = math.max(now, tonumber(s[8]) or 0)
if not measuring then start = math.max(start, tat - tolerance) end
-- a header's token rate while requests are paced (it wins), else the one found
local found = not (rpaced and trate > 0 and tburst > 0) and tpaced
if found then trate, tburst = frate, fburst end
local tokens = trate > 0 and tburst > 0 and (rpaced or found)
local ttat, tinterval, tfull = 0, 0, 0
if tokens and tcost > 0 then
  -- no request costs more than the bucket holds: an estimate beyond it (a huge max_tokens the
  -- server will refuse anyway) must not book the schedule far into the future for everyone;
  -- but a found bucket is a guess, far under the server's: a send it refused asks again for
  -- all of its tokens (a while of the rate at most), waiting for those beyond the bucket too,
  -- else short sends take them first each time it waits
  local cap = tburst
  if found and tonumber(ARGV[8]) == 1 then cap = math.max(tburst, trate * {REFUSED_SPAN}) end
  tcost = math.min(tcost, cap)
  tinterval = tcost * 1000 / trate
  tfull = tburst * 1000 / trate
  ttat = math.max(tonumber(s[7]) or 0, now)
  local tstart = ttat - (tfull - tinterval)
  held_by_tokens = tstart > start + 1
  start = math.max(start, tstart)
end
local tflag = 0
if found then tflag = 1 end
local wait = start - now
if latest >= 0 and wait >= latest then
  return {{{TOO_LATE}, left(), 0, tflag}}
end
if wait > maxgate then
  keep_pacing()
  if latest >= 0 and maxgate >= latest then
    return {{{TOO_LATE}, left(), 0, tflag}}
  end
  return {{math.floor(maxgate * 1000), left(), 1, tflag}}
end
if horizon > 0 and wait > horizon then
  keep_pacing()
  return {{math.floor((wait - horizon) * 1000), left(), 0, tflag}}
end
if not measuring then redis.call('HSET', key, 'tat', math.max(tat, start) + interval) end
if tinterval > 0 then
  -- a send larger than the bucket waited for its excess: it leaves the bucket empty, not in debt
  redis.call('HSET', key, 'ttat',
             math.max(ttat + tinterval, start + math.min(tinterval, tfull)))
end
if wait > 1 then keep_pacing() end
redis.call('PEXPIRE', key, math.max({KEEP}, math.floor((tonumber(s[9]) or 0) - now)))
return {{math.floor(wait * 1000), left(), 1, tflag}}
"""

REPORT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local key = KEYS[1]
local a = {}
for i = 1, #ARGV do a[i] = tonumber(ARGV[i]) end
local sent, retried, throttled, gate, hinted = a[1], a[2], a[3], a[4], a[5]
local succeeded, thinted, tburst, excess = a[6], a[7], a[8], a[9]
local tthrottled, ttokens, tcount = a[10], a[11], a[12]
local window, disengage, floor, engage, minrate = a[13], a[14], a[15], a[16], a[17]
local decrease, guard, increase, fraction, margin, keep = a[18], a[19], a[20], a[21], a[22], a[23]
local warmth, backoff, probe, low, high, lag = a[24], a[25], a[26], a[27], a[28], a[29]
local settle, measuring, overshare, start, trial = a[30], a[31], a[32], a[33], a[34]
local kept, evidence, enough, timeout, unhelped = a[35], a[36], a[37], a[38], a[39]
local independent, farover, fewest, residue, trial_lag = a[40], a[41], a[42], a[43], a[44]
local far_span, ref_span, held_min = a[45], a[46], a[47]
local tc = 48
local function held(t, n, tt, tn)
  -- the 429 fraction is clearly above ``kept`` of the reference's: no fall by half, already
  if n <= 0 or tn < held_min then return false end
  local before, during = t / n, tt / tn
  local err = math.sqrt(during * (1 - during) / tn + kept * kept * before * (1 - before) / n)
  return during - kept * before > evidence * err
end
local function pooled_error(t, n, tt, tn)
  -- the standard error of the difference of two 429 fractions, were they one (pooled)
  local pooled = (t + tt) / (n + tn)
  return math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / tn))
end
local function fell(t, n, tt, tn)
  -- the 429 fraction fell by half at least and by more than noise explains (a z-test)
  if n <= 0 or tn <= 0 then return false end
  local before, during = t / n, tt / tn
  if during > kept * before then return false end
  local err = pooled_error(t, n, tt, tn)
  return err == 0 or before - during >= evidence * err
end
local second = math.floor(now / 1000)
local tick = math.floor(now / lag)
local per_second = 1000 / lag
redis.call('HSETNX', key, 'began', now)
if sent > 0 then redis.call('HINCRBY', key, 'r:' .. second, sent) end
if retried > 0 then redis.call('HINCRBY', key, 'x:' .. second, retried) end
if succeeded > 0 then redis.call('HINCRBY', key, 's:' .. tick, succeeded) end
if ttokens > 0 then redis.call('HINCRBY', key, 'k:' .. tick, ttokens) end
local requests, retries, recent, ok, tflow = 0, 0, 0, 0, 0
local state, successes = {}, {}
local fields = redis.call('HGETALL', key)
for i = 1, #fields, 2 do
  local kind, at = string.match(fields[i], '^([rxsk]):(%d+)$')
  if kind == nil then
    state[fields[i]] = tonumber(fields[i + 1])
  elseif kind == 's' or kind == 'k' then
    -- successes (and their tokens) per report span (a ``tick``), kept two seconds: rates, not
    -- the budget
    if tonumber(at) <= tick - 2 * per_second then
      redis.call('HDEL', key, fields[i])
    elseif kind == 'k' then
      if tonumber(at) >= tick - per_second then tflow = tflow + tonumber(fields[i + 1]) end
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
local crate, cburst = 0, 0  -- the token schedule that paces now: a header's, else a found one
if engaged > now and (state['trate'] or 0) > 0 then
  crate, cburst = state['trate'], state['tburst'] or 0
elseif (state['tengaged'] or 0) > now and (state['frate'] or 0) > 0 then
  crate, cburst = state['frate'], state['fburst'] or 0
end
if excess > 0 and crate > 0 then
  -- answers used more tokens than their sends booked: the schedule is charged the difference
  -- (a bucket's worth at most a report: more says the bucket was overspent already)
  local charged = math.min(excess, cburst) * 1000 / crate
  redis.call('HSET', key, 'ttat', math.max(state['ttat'] or 0, now) + charged)
end
local rate = state['rate'] or 0
local last = state['decreased'] or 0
local ceiling = state['ceiling'] or 0
local measure = state['measure'] or 0
local judge, trialing = state['judge'] or 0, state['trial'] or 0
local aside = (state['aside'] or 0) > now
local ref = state['ref'] or 0
-- successes per second over the last second and this tick so far (this report's included), or
-- since the fleet began to use the endpoint (its first report's news included), if later
local since = (now + lag - (state['began'] or now)) / 1000
local span = math.max(0.25, math.min((now - (tick - per_second) * lag) / 1000, since))
local sends = math.max(0.5, math.min(1 + now / 1000 - second, since))
local succeeding = 0
if ok >= 5 then succeeding = ok / span end
if aside then
  -- the 429s were judged not to depend on the fleet's rate: no pacing until the verdict is old
elseif throttled > 0 then
  if engaged <= now or rate <= 0 then
    rate = math.max(floor, recent / sends * engage)
    last, ceiling, state['hinted'], measure = now, 0, 0, 0
    -- first the reference: the answers to what the fleet sends unpaced (gates only)
    judge, trialing, ref = 0, 0, now
    redis.call('HSET', key, 'tat', now, 'ttat', now, 'hold', now + lag, 'over', 0, 'found', 0,
               'rt', 0, 'rn', 0, 'unjudged', 0)
  elseif ref > 0 then
    -- the first wave's other processes: what they sent is news of where to start
    rate = math.max(rate, recent / sends * engage)
  elseif measure > 0 then
    if now >= measure then
      redis.call('HINCRBY', key, 'over', throttled)
    end
  elseif hinted < 0 and trialing == 0 and now >= math.max(last + guard, state['hold'] or 0) then
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
elseif engaged > now and succeeded > 0 and hinted < 0 and measure <= 0 and trialing == 0
       and ref == 0 and now - last >= guard then
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
if hinted >= 0 or (state['hinted'] or 0) > 0 or thinted > 0 or (state['trate'] or 0) > 0
   or engaged <= now then
  measure, judge, ref = 0, 0, 0  -- the headers say the rate (of requests, or of tokens)
elseif ref > 0 then
  local rt = redis.call('HINCRBY', key, 'rt', throttled)
  local rn = redis.call('HINCRBY', key, 'rn', throttled + succeeded)
  local through = rn - rt
  if (through >= 5 and rt >= farover * through and now >= ref + far_span)
     or (through < 5 and now >= ref + timeout) then
    -- far over a limit (a 429 comes back at once, a success after the latency: only once a few
    -- have come can their share tell), or too few successes to tell: pace now at the rate the
    -- first waves sent at, then measure
    ref, last, measure = 0, now, now + lag + settle
    redis.call('HSET', key, 'tat', now, 'ttat', now, 'hold', now + lag)
  elseif through >= 5 and now >= ref + ref_span
         and (rn >= enough or (rn >= fewest and fell(rt, rn, residue, enough))
              or now >= ref + timeout) then
    -- the trial: a little under the rate the successes came at; against a limit, as many get
    -- through and the 429s vanish; against 429s that do not depend on the rate, they stay
    ceiling = through * 1000 / math.max(lag, now - ref)
    rate = math.max(minrate, ceiling * trial)
    ref, last, judge, trialing = 0, now, now + trial_lag, 1
    redis.call('HSET', key, 'rt', rt, 'rn', rn, 'rrate', ceiling, 'jt', 0, 'jn', 0,
               'hold', judge)
  end
elseif measure > 0 and now >= measure + measuring then
  -- 429s all along: what got through is the limit; none: the rate was under it (AIMD goes on)
  local from = math.ceil(measure / lag)
  local through = 0
  for _, counted in ipairs(successes) do
    if counted[1] >= from then through = through + counted[2] end
  end
  local over = tonumber(redis.call('HGET', key, 'over')) or 0
  if through >= 5 then
    local succeeding_then = through * 1000 / (now - from * lag)
    -- the reference the fleet's judgement of its own rate compares with
    redis.call('HSET', key, 'rt', over, 'rn', over + through, 'rrate', succeeding_then,
               'jt', 0, 'jn', 0)
    judge = now
  end
  if over >= through * overshare and through >= 5 then
    ceiling = through * 1000 / (now - from * lag)
    rate = math.max(minrate, ceiling * trial)
    last = now
    -- the server's bucket is empty after a window over the limit: until it has refilled a
    -- little, the 429s of sends that bunch (a busy machine) are no news of the rate (nor of
    -- whether slowing helps)
    judge = math.max(now + measuring + lag, state['tat'] or 0)
    -- paced far over without a trial: the answers to paced sends are judged as a trial's
    -- (most answers refused by a limit shared with others look far over a limit too)
    redis.call('HSET', key, 'hold', judge, 'found', 1, 'unjudged', 1)
  end
  measure = 0
elseif judge > 0 and now >= judge and not aside then
  -- did slowing down lower the 429 fraction? if not, the 429s do not depend on the rate
  local jt = redis.call('HINCRBY', key, 'jt', throttled)
  local jn = redis.call('HINCRBY', key, 'jn', throttled + succeeded)
  local rt, rn = state['rt'] or 0, state['rn'] or 0
  local judged = false
  if trialing == 1 and (jn >= enough or now >= judge + timeout) then
    judged = jn > 0 and not fell(rt, rn, jt, jn)
    -- it fell: the limit is where it was measured; from now on, watch that slowing keeps
    -- helping (the trial's own rate, under it, set no ceiling)
    trialing, judge = 0, now
    if ceiling > 0 then rate, last = math.max(rate, ceiling * backoff), now end
    redis.call('HSET', key, 'jt', 0, 'jn', 0)
  elseif trialing == 0 and (state['unjudged'] or 0) == 1
         and (jn >= enough or held(rt, rn, jt, jn)) then
    judged = not fell(rt, rn, jt, jn)
    redis.call('HSET', key, 'unjudged', 0)
  elseif trialing == 0 and jn >= enough and rate < unhelped * (state['rrate'] or 0) then
    judged = not fell(rt, rn, jt, jn)
  end
  if judged then
    aside, engaged, measure, judge = true, 0, 0, 0
    redis.call('HSET', key, 'aside', now + independent, 'engaged', 0, 'warm', 0, 'judge', 0)
    state['warm'] = 0
  end
end
-- the fleet's token rate, found from its answers where no header states it
local tleft, tapart = 0, 0
@TOKEN_FINDER@
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
             'measure', measure, 'judge', judge, 'trial', trialing, 'ref', ref)
  state['warm'] = now + warmth
end
redis.call('PEXPIRE', key, math.max(keep, math.floor((state['warm'] or 0) - now)))
local left = math.floor(tleft)
if engaged > now then left = math.max(left, math.floor(engaged - now)) end
local apart = 0
if aside then apart = math.floor((tonumber(redis.call('HGET', key, 'aside')) or 0) - now) end
return {left, requests, retries, math.floor(rate * 1000), apart, math.max(0, math.floor(tapart))}
""".replace("@TOKEN_FINDER@\n", TOKEN_FINDER)
