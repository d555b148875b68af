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
  ``headroom`` times the rate measured so far (or in an earlier window, if more); after
  ``learn_span``, that rate is the limit's
  if 429s came all along (``overshare`` per success at least, in the window's second half).
  With fewer, the fleet sent under the limit (a first wave's refused callers sleep their
  backoff meanwhile: a fleet measures what a few sent), and it measures again, up to
  ``timeout`` after it engaged (then at the most that got through in a window);
- **a trial** (``tphase`` 2): ``trial`` of it, held, the answers judged as one process's are
  (``fell``: a fall by half and beyond noise) from ``trial_lag`` after the slots booked before
  it (at the brake's rate, up to the horizon ahead) have gone. Not fallen: the fleet's tokens
  are not what the 429s depend on; no token pacing for ``independent``. Unless far fewer tokens
  got through (over the last second, ``learn_min`` successes at least) than the trial sent: then
  it was over the limit, not under it (what got through while measuring came partly out of a
  bucket that had refilled while the first wave's callers slept), and it is tried once more, a
  margin under what got through;
- **AIMD in tokens** (``tphase`` 3): a token 429 (not for slots booked before the last change,
  ``thold``) sets the rate ``backoff`` under the lower of the rate and the token rate of the
  successes over the last second; each report's successes grow it by ``add`` requests' worth of
  tokens (of the mean size) a second, or, near where the last 429 came, by ``probe`` a second.
  Lowered under ``unhelped`` of the measured rate with the 429s not clearly fallen, it stands
  aside after all. Not as soon as under the trial's rate with them not halved, as one process
  does: a fleet's reference may span seconds of measuring with few 429s, and AIMD about a real
  limit leaves some (long prompts), which that rule took for a limit not of our tokens.
- **standing aside**, the fleet counts its answers (``tawt``, ``tawn``). Once their 429s come
  ``watch_rise`` times as often as the paced ones the verdict was reached on (``tvt``,
  ``tvn``), beyond noise (``watch_evidence`` standard errors, ``watch_min`` answers at least),
  slowing did help: a trial run near a limit it overstated, which left 429s that fell too
  little. The rate is found again, and that trial does not stand aside (``tproven``; the watch
  in AIMD still may). 429s that do not depend on the fleet's tokens come as often unpaced.

The found schedule (``frate``, ``fburst`` = ``burst`` seconds of it, never under ``min_trate``)
is kept apart from a header's (``trate``, ``tburst``), which always wins and drops it; both
drain ``ttat``. Apart, a process of an earlier version sharing the hash (a rolling deploy) never
takes a found rate for a header's. ``RESERVE`` books tokens from the found schedule while the
fleet paces tokens (``tengaged``), and says so in its reply: processes then book no tokens from
their own found rate. A found rate is forgotten once the fleet stops pacing tokens: found afresh
at the next 429, as by a process.
"""

from __future__ import annotations

from ._pacing_evidence import WATCH_EVIDENCE, WATCH_RISE
from ._token_learning import (
    ADD_PER_SECOND,
    LEARN_MIN_SUCCESSES,
    LEARN_SPAN,
    LEARNT_BURST,
    PROVISIONAL_HEADROOM,
    UNHELPED_TOKEN_SHARE,
    VERDICT_MIN_ANSWERS,
)
from ._token_pacing import MIN_TOKEN_RATE, WATCH_MIN_ANSWERS

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
    WATCH_MIN_ANSWERS,
    WATCH_RISE,
    WATCH_EVIDENCE,
)
"""Passed after ``REPORT``'s own constants, in this order."""

TOKEN_FINDER = """
do
local learn_span, learn_min, headroom, add = a[tc], a[tc + 1], a[tc + 2], a[tc + 3]
local verdict_min, unhelped_t, tburst_s, min_trate = a[tc + 4], a[tc + 5], a[tc + 6], a[tc + 7]
local watch_min, watch_rise, watch_evidence = a[tc + 8], a[tc + 9], a[tc + 10]
local f = {}
for _, name in ipairs({'tengaged', 'tphase', 'frate', 'taside', 'tsince', 'tfirst', 'tmeas',
                       'tcnt', 'twt', 'tmax', 'trt', 'trn', 'trrate', 'tjudge', 'tpt', 'tpn',
                       'tretried', 'tst', 'tsn', 'tceil', 'tgrown', 'thold', 'tvt', 'tvn',
                       'tawt', 'tawn', 'tproven'}) do
  f[name] = state[name] or 0
end
local function rose(t, n, tt, tn)
  -- the later 429 fraction rose by ``watch_rise`` at least and beyond noise (``rose``)
  if n <= 0 or tn <= 0 then return false end
  local before, after = t / n, tt / tn
  if after <= before or after < watch_rise * before then return false end
  local err = pooled_error(t, n, tt, tn)
  return err == 0 or after - before >= watch_evidence * err
end
local function stand_aside(t, n)
  -- judged on ``t`` 429s in ``n`` paced answers: the watch compares the unpaced ones with them
  f.taside, f.tengaged, f.tphase, f.frate = now + independent, 0, 0, 0
  f.tvt, f.tvn, f.tawt, f.tawn, f.tproven = t, n, 0, 0, 0
end
local function booked_until()
  -- when the slots booked so far have gone (the schedule runs up to a horizon ahead)
  return math.max(now, tonumber(redis.call('HGET', key, 'ttat')) or 0)
end
local function settle_found()
  -- the answers to slots booked during the trial lower nothing
  f.tphase, f.tgrown, f.tst, f.tsn, f.tceil = 3, now, 0, 0, 0
  f.thold = booked_until()
end
local changed, watched = false, false
local stated = thinted > 0 or (state['trate'] or 0) > 0
if f.tphase > 0 and (f.tengaged <= now or stated) then
  -- no token 429 and no wait for a while, or a header states the rate: what was found is
  -- dropped (found afresh next time)
  f.tphase, f.frate, f.tengaged, changed = 0, 0, 0, true
end
if f.taside > now and not stated and tthrottled + succeeded > 0 then
  -- standing aside, the unpaced answers: once their 429s are clearly more frequent than the
  -- paced ones of the verdict, slowing did help (a trial near a limit it overstated). The
  -- rate is found again, and its trial does not stand aside (the watch after it still may)
  f.tawt, f.tawn, changed = f.tawt + tthrottled, f.tawn + tthrottled + succeeded, true
  if f.tawn >= watch_min and rose(f.tvt, f.tvn, f.tawt, f.tawn) then
    f.taside, f.tengaged, f.tphase, watched = 0, now + disengage, 0, true
    -- spent: a verdict written without them (a script of an earlier version sharing the hash)
    -- is not watched, rather than withdrawn at once on these
    f.tvt, f.tvn, f.tawt, f.tawn = 0, 0, 0, 0
  end
end
if stated or f.taside > now then
  -- a header states the rate, or the fleet's tokens were judged not to matter
elseif tthrottled > 0 or f.tengaged > now then
  if f.tengaged <= now or f.tphase == 0 then
    f.tphase, f.frate, f.tsince, f.tfirst, f.tmeas, f.tcnt = 1, 0, now, 0, 0, 0
    f.twt, f.tmax, f.trt, f.trn, f.tretried = 0, 0, 0, 0, 0
    f.tproven = watched and 1 or 0
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
        -- a brake on a crowd far over the limit, never under what an earlier window saw (a
        -- window's first few successes are a noisy count)
        f.frate = math.max(through, f.tmax) * headroom
        if spent >= learn_span then
          if f.twt >= overshare * f.tcnt or now - f.tsince >= timeout then
            -- 429s all along: what got through is the limit (at the timeout, the most that did)
            if f.twt < overshare * f.tcnt then through = math.max(through, f.tmax) end
            f.trrate, f.frate, f.tphase = through, math.max(min_trate, through * trial), 2
            -- judged on the answers to slots booked at its rate: those booked before went at
            -- the brake's, over the limit
            f.tjudge, f.tpt, f.tpn, f.tgrown = booked_until(), 0, 0, now
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
            if f.tretried == 0 and ok >= learn_min and through < trial * f.frate then
              -- far less got through than the trial sent (successes enough to tell): it was
              -- over the limit (measured out of a bucket that had refilled meanwhile), not
              -- under it; once more, under what got through
              f.tretried, f.trrate = 1, through
              f.frate = math.max(min_trate, through * trial)
              f.tjudge, f.tpt, f.tpn, f.tgrown = booked_until(), 0, 0, now
            elseif f.tproven == 0 then
              stand_aside(f.tpt, f.tpn)
            else
              settle_found()
            end
          else
            settle_found()
          end
        end
      end
    end
  else
    f.tst, f.tsn = f.tst + tthrottled, f.tsn + tthrottled + succeeded
    if tthrottled > 0 and now >= f.thold then
      local through = f.frate
      if tflow > 0 then through = math.min(f.frate, tflow / span) end
      f.tceil = through
      if through * backoff < f.frate then
        f.frate = math.max(min_trate, through * backoff)
        local booked = tonumber(redis.call('HGET', key, 'ttat')) or 0
        f.tgrown, f.thold = now, math.max(now, booked)
      end
      -- far under the measured rate with the 429s not clearly fallen: slowing did not help
      if f.frate < unhelped_t * f.trrate and f.tsn >= enough
         and not fell(f.trt, f.trn, f.tst, f.tsn) then
        stand_aside(f.tst, f.tsn)
      end
    elseif tcount > 0 and now >= f.thold then
      f.tmeas, f.tcnt = f.tmeas + ttokens, f.tcnt + tcount
      if f.tceil > 0 and f.frate > high * f.tceil then f.tceil = 0 end
      if f.tceil > 0 and f.frate >= low * f.tceil then
        f.frate = f.frate + f.frate * probe * math.min(1, math.max(0, now - f.tgrown) / 1000)
      else
        local mean = f.tmeas / math.max(1, f.tcnt)
        f.frate = f.frate + tcount * add * mean * mean / f.frate
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
  fields[#fields + 1] = 'fburst'
  fields[#fields + 1] = math.max(1, f.frate * tburst_s)
  redis.call('HSET', key, unpack(fields))
end
if f.tphase > 0 and f.tengaged > now then tleft = f.tengaged - now end
if f.taside > now and not stated then tapart = f.taside - now end
end
"""
