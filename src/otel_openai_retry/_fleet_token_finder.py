"""The fleet's token rate, found from its answers when no header states it: a fragment of the
``REPORT`` script (``_fleet_scripts``) and the constants it is passed.

A token limit that only a 429's body names (``type: tokens``; Azure OpenAI, proxies) cannot be
found by each process alone: the others' tokens drain the same bucket, so a process that slows
to try whether its own tokens are what the 429s depend on sees them stay (the others did not
slow) and stands aside, and the fleet sends unpaced into the limit. So the fleet finds one rate,
from every process's answers, as one process's ``TokenRateFinder`` finds its own:

- **measuring** (``tphase`` 1): a token 429 that no header explains engages it (``tengaged``,
  kept for ``disengage`` after the last one, or after a wait it made); each report adds the
  tokens of the successes to sends that reserved tokens (``k:<tick>`` per report span, kept two
  seconds) and the answers from the first success on (the reference: a 429 comes back at once,
  a success after the latency). Once ``learn_min`` successes are in, sends are held to
  ``headroom`` times the rate measured so far; after ``learn_span``, that rate is the limit's
  if 429s came all along (``overshare`` per success at least, in the window's second half).
  With fewer, the fleet sent under the limit (a first wave's refused callers sleep their
  backoff meanwhile: a fleet measures what a few sent), and it measures again, up to
  ``timeout`` after it engaged (then at the most that got through in a window);
- **a trial** (``tphase`` 2): ``trial`` of it, held, the answers from ``trial_lag`` on judged as
  one process's are (``fell``: a fall by half and beyond noise). Not fallen: the fleet's tokens
  are not what the 429s depend on; no token pacing for ``independent``. Unless far fewer tokens
  got through (over the last second) than the trial sent: then it was over the limit, not under
  it (what got through while measuring came partly out of a bucket that had refilled while the
  first wave's callers slept), and it is tried once more, a margin under what got through;
- **AIMD in tokens** (``tphase`` 3): a token 429 (not for slots booked before the last change,
  ``thold``) sets the rate ``backoff`` under the lower of the rate and the token rate of the
  successes over the last second; each report's successes grow it by ``add`` requests' worth of
  tokens (of the mean size) a second, or, near where the last 429 came, by ``probe`` a second.
  Lowered under ``unhelped`` of the measured rate with the 429s not clearly fallen, it stands
  aside after all. Not as soon as under the trial's rate with them not halved, as one process
  does: a fleet's reference may span seconds of measuring with few 429s, and AIMD about a real
  limit leaves some (long prompts), which that rule took for a limit not of our tokens.

The schedule (``trate``, ``tburst`` = ``burst`` seconds of it, ``ttat``) is the one ``RESERVE``
books tokens from; ``tfound`` tells it from a header's, which always wins. A found rate is
forgotten once the fleet stops pacing tokens: found afresh at the next 429, as by a process.
Processes book the tokens of their sends there and no longer from their own found rate while the
fleet paces by it (``RESERVE`` says so in its reply).
"""

from __future__ import annotations

from ._token_learning import (
    ADD_PER_SECOND,
    LEARN_MIN_SUCCESSES,
    LEARN_SPAN,
    LEARNT_BURST,
    PROVISIONAL_HEADROOM,
    UNHELPED_TOKEN_SHARE,
    VERDICT_MIN_ANSWERS,
)
from ._token_pacing import MIN_TOKEN_RATE

__all__ = ["TOKEN_CONSTANTS", "TOKEN_FINDER"]

TOKEN_CONSTANTS: tuple[float, ...] = (
    LEARN_SPAN * 1000,
    LEARN_MIN_SUCCESSES,
    PROVISIONAL_HEADROOM,
    ADD_PER_SECOND,
    VERDICT_MIN_ANSWERS,
    UNHELPED_TOKEN_SHARE,
    LEARNT_BURST,
    MIN_TOKEN_RATE,
)
"""Passed after ``REPORT``'s own constants, in this order."""

TOKEN_FINDER = """
do
local learn_span, learn_min, headroom, add = a[tc], a[tc + 1], a[tc + 2], a[tc + 3]
local verdict_min, unhelped_t, tburst_s, min_trate = a[tc + 4], a[tc + 5], a[tc + 6], a[tc + 7]
local f = {}
for _, name in ipairs({'tengaged', 'tphase', 'trate', 'tfound', 'taside', 'tsince', 'tfirst',
                       'tmeas', 'tcnt', 'twt', 'tmax', 'trt', 'trn', 'trrate', 'tjudge', 'tpt',
                       'tpn', 'tretried', 'tst', 'tsn', 'tceil', 'tchanged', 'tgrown',
                       'thold'}) do
  f[name] = state[name] or 0
end
local stated = thinted > 0 or (f.trate > 0 and f.tfound == 0)
local changed = false
if f.tfound == 1 and f.tengaged <= now and f.tphase > 0 then
  -- no token 429 and no wait for a while: what was found is found afresh next time
  f.tphase, f.trate, changed = 0, 0, true
end
if stated or f.taside > now then
  -- a header states the rate, or the fleet's tokens were judged not to matter
elseif tthrottled > 0 or f.tengaged > now then
  if f.tengaged <= now or f.tphase == 0 then
    f.tphase, f.tfound, f.trate, f.tsince, f.tfirst, f.tmeas, f.tcnt = 1, 1, 0, now, 0, 0, 0
    f.twt, f.tmax, f.trt, f.trn, f.tretried = 0, 0, 0, 0, 0
    redis.call('HSET', key, 'ttat', now)
  end
  if tthrottled > 0 then f.tengaged = math.max(f.tengaged, now + disengage) end
  changed = true
  if f.tphase == 1 then
    if f.tfirst > 0 then
      f.trt, f.trn = f.trt + tthrottled, f.trn + tthrottled + succeeded
      -- the window's 429s, from its second half: the first wave's came back at once
      if now - f.tfirst >= learn_span / 2 then f.twt = f.twt + tthrottled end
    end
    if tcount > 0 then
      -- these successes came within the report span before now
      if f.tfirst == 0 then f.tfirst = now - lag end
      f.tmeas, f.tcnt = f.tmeas + ttokens, f.tcnt + tcount
      local spent = now - f.tfirst
      if f.tcnt >= learn_min and spent >= far_span then
        local through = f.tmeas * 1000 / spent
        f.trate = through * headroom
        if spent >= learn_span then
          if f.twt >= overshare * f.tcnt or now - f.tsince >= timeout then
            -- 429s all along: what got through is the limit (at the timeout, the most that did)
            if f.twt < overshare * f.tcnt then through = math.max(through, f.tmax) end
            f.trrate, f.trate, f.tphase = through, through * trial, 2
            f.tjudge, f.tpt, f.tpn, f.tchanged, f.tgrown = now, 0, 0, now, now
          else
            -- too few 429s: the fleet sent under the limit (its refused callers were sleeping
            -- their backoff), so what got through says only that the limit is higher; again
            f.tmax = math.max(f.tmax, through)
            f.tfirst, f.tmeas, f.tcnt, f.twt = now, 0, 0, 0
          end
        end
      end
    end
  elseif f.tphase == 2 then
    if now - f.tjudge >= trial_lag then
      f.tpt, f.tpn = f.tpt + tthrottled, f.tpn + tthrottled + succeeded
      if f.tpn >= verdict_min then
        local fallen = fell(f.trt, f.trn, f.tpt, f.tpn)
        local before = f.trt / math.max(1, f.trn)
        if fallen or f.tpt > kept * before * enough or f.tpn >= enough
           or now - f.tjudge >= timeout then
          local through = tflow / span
          if not fallen and (f.tpn >= enough or f.tpt / f.tpn > kept * before) then
            if f.tretried == 0 and through > 0 and through < trial * f.trate then
              -- far less got through than the trial sent: it was over the limit (measured out
              -- of a bucket that had refilled meanwhile), not under it; once more, under that
              f.tretried, f.trrate, f.trate = 1, through, through * trial
              f.tjudge, f.tpt, f.tpn, f.tchanged, f.tgrown = now, 0, 0, now, now
            else
              f.taside, f.tengaged, f.tphase, f.trate = now + independent, 0, 0, 0
            end
          else
            f.tphase, f.tchanged, f.tgrown, f.tst, f.tsn, f.tceil = 3, now, now, 0, 0, 0
          end
        end
      end
    end
  else
    f.tst, f.tsn = f.tst + tthrottled, f.tsn + tthrottled + succeeded
    if tthrottled > 0 and now >= f.thold then
      local through = f.trate
      if tflow > 0 then through = math.min(f.trate, tflow / span) end
      f.tceil = through
      if through * backoff < f.trate then
        f.trate = math.max(min_trate, through * backoff)
        local booked = tonumber(redis.call('HGET', key, 'ttat')) or 0
        f.tchanged, f.tgrown, f.thold = now, now, math.max(now, booked)
      end
      -- far under the measured rate with the 429s not clearly fallen: slowing did not help
      if f.trate < unhelped_t * f.trrate and f.tsn >= enough
         and not fell(f.trt, f.trn, f.tst, f.tsn) then
        f.taside, f.tengaged, f.tphase, f.trate = now + independent, 0, 0, 0
      end
    elseif tcount > 0 and now >= f.thold then
      f.tmeas, f.tcnt = f.tmeas + ttokens, f.tcnt + tcount
      if f.tceil > 0 and f.trate > high * f.tceil then f.tceil = 0 end
      if f.tceil > 0 and f.trate >= low * f.tceil then
        f.trate = f.trate + f.trate * probe * math.min(1, math.max(0, now - f.tgrown) / 1000)
      else
        local mean = f.tmeas / math.max(1, f.tcnt)
        f.trate = f.trate + tcount * add * mean * mean / f.trate
      end
      f.tgrown = now
    end
  end
end
if changed then
  local fields = {}
  for name, value in pairs(f) do
    fields[#fields + 1] = name
    fields[#fields + 1] = value
  end
  fields[#fields + 1] = 'tburst'
  fields[#fields + 1] = math.max(1, f.trate * tburst_s)
  redis.call('HSET', key, unpack(fields))
end
if f.tfound == 1 and f.tengaged > now then tleft = f.tengaged - now end
end
"""
