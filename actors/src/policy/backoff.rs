//! The seed's shared throttle schedule, as pure functions and a small state machine.
//!
//! Per (region, model) the broker keeps a counter of consecutive ThrottlingExceptions. While
//! it is non-zero every call to that model first waits `base * 2^(n-1)`, capped at `cap`
//! (1 s, 2 s, 4 s, 8 s, 16 s, then 32 s with the defaults), with a small random jitter so
//! workers released together do not call together. The counter resets on a success, or once
//! `reset_after` (60 s) passes with no throttle. [`crate::ThrottleActor`] applies it;
//! nothing here sleeps or reads the clock.

use std::time::Duration;

use tokio::time::Instant;

/// The schedule's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffSchedule {
    /// Delay after the first throttle (seed: 1 s).
    pub base: Duration,
    /// Longest delay (seed: 32 s).
    pub cap: Duration,
    /// Quiet time after the last throttle that resets the counter (seed: 60 s).
    pub reset_after: Duration,
    /// Half-width of the random jitter as a fraction of the delay (0.1 = +-10%).
    pub jitter: f64,
}

impl Default for BackoffSchedule {
    fn default() -> Self {
        BackoffSchedule {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(32),
            reset_after: Duration::from_secs(60),
            jitter: 0.1,
        }
    }
}

impl BackoffSchedule {
    /// The un-jittered delay after `consecutive` throttles: zero, then base * 2^(n-1) capped.
    pub fn delay_for(&self, consecutive: u32) -> Duration {
        if consecutive == 0 {
            return Duration::ZERO;
        }
        let doublings = (consecutive - 1).min(31);
        self.base
            .checked_mul(1u32 << doublings)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// `delay` moved by the jitter: `unit` in [0, 1) maps to [1 - jitter, 1 + jitter).
    pub fn jittered(&self, delay: Duration, unit: f64) -> Duration {
        let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        delay.mul_f64(factor.max(0.0))
    }
}

/// The shared consecutive-throttle counter of one (region, model).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SharedBrake {
    /// Throttles since the last success (or quiet-window reset).
    consecutive: u32,
    /// When the last throttle was reported; the quiet window runs from here.
    last_throttle: Option<Instant>,
}

impl SharedBrake {
    /// Consecutive throttles counted now (without applying the quiet-window reset).
    pub fn consecutive(&self) -> u32 {
        self.consecutive
    }

    /// When the last throttle was reported.
    pub fn last_throttle(&self) -> Option<Instant> {
        self.last_throttle
    }

    /// Forgets the counter if the quiet window has passed. Returns true if that reset it.
    pub fn expire(&mut self, schedule: &BackoffSchedule, now: Instant) -> bool {
        let quiet = self
            .last_throttle
            .is_some_and(|at| now.saturating_duration_since(at) >= schedule.reset_after);
        if quiet && self.consecutive > 0 {
            self.consecutive = 0;
            return true;
        }
        false
    }

    /// The un-jittered delay a caller must wait before its next call (zero when not
    /// throttled), after applying the quiet-window reset. The first `free` consecutive
    /// throttles do not count (the adaptive policy's pacer handles those).
    pub fn pre_call_delay(
        &mut self,
        schedule: &BackoffSchedule,
        now: Instant,
        free: u32,
    ) -> Duration {
        self.expire(schedule, now);
        schedule.delay_for(self.consecutive.saturating_sub(free))
    }

    /// Counts a ThrottlingException (after the quiet-window reset: a throttle after a quiet
    /// window starts a new count).
    pub fn on_throttle(&mut self, schedule: &BackoffSchedule, now: Instant) {
        self.expire(schedule, now);
        self.consecutive = self.consecutive.saturating_add(1);
        self.last_throttle = Some(now);
    }

    /// Counts a success. Returns the counter it reset, if it was non-zero.
    pub fn on_success(&mut self) -> Option<u32> {
        let was = std::mem::take(&mut self.consecutive);
        (was > 0).then_some(was)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A short brake schedule without jitter: 10, 20, 40, 80 ms, reset after `reset_after`.
    fn brake_schedule(reset_after: Duration) -> BackoffSchedule {
        BackoffSchedule {
            base: ms(10),
            cap: ms(80),
            reset_after,
            jitter: 0.0,
        }
    }

    #[test]
    fn seed_schedule_doubles_from_one_second_and_caps_at_32() {
        let s = BackoffSchedule::default();
        let secs: Vec<u64> = (0..9).map(|n| s.delay_for(n).as_secs()).collect();
        assert_eq!(secs, vec![0, 1, 2, 4, 8, 16, 32, 32, 32]);
    }

    #[test]
    fn huge_counters_stay_at_the_cap() {
        let s = BackoffSchedule::default();
        assert_eq!(s.delay_for(u32::MAX), Duration::from_secs(32));
        assert_eq!(s.delay_for(40), Duration::from_secs(32));
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let s = BackoffSchedule::default();
        let d = Duration::from_secs(10);
        assert_eq!(s.jittered(d, 0.0), Duration::from_secs(9));
        assert_eq!(s.jittered(d, 0.5), d);
        assert!(s.jittered(d, 0.999_999) <= Duration::from_secs(11));
        let none = BackoffSchedule { jitter: 0.0, ..s };
        assert_eq!(none.jittered(d, 0.9), d);
    }

    #[test]
    fn brake_counts_throttles_and_resets_on_success() {
        let s = brake_schedule(ms(1000));
        let t0 = Instant::now();
        let mut b = SharedBrake::default();
        assert_eq!(b.pre_call_delay(&s, t0, 0), Duration::ZERO);
        b.on_throttle(&s, t0);
        assert_eq!(b.pre_call_delay(&s, t0, 0), ms(10));
        b.on_throttle(&s, t0);
        b.on_throttle(&s, t0);
        assert_eq!(b.pre_call_delay(&s, t0, 0), ms(40));
        assert_eq!(b.on_success(), Some(3));
        assert_eq!(b.pre_call_delay(&s, t0, 0), Duration::ZERO);
        assert_eq!(b.on_success(), None);
    }

    #[test]
    fn free_throttles_do_not_count() {
        let s = brake_schedule(ms(1000));
        let t0 = Instant::now();
        let mut b = SharedBrake::default();
        for _ in 0..4 {
            b.on_throttle(&s, t0);
        }
        assert_eq!(b.pre_call_delay(&s, t0, 4), Duration::ZERO);
        b.on_throttle(&s, t0);
        assert_eq!(b.pre_call_delay(&s, t0, 4), ms(10));
        assert_eq!(b.pre_call_delay(&s, t0, 0), ms(80));
    }

    #[test]
    fn brake_resets_after_the_quiet_window_only() {
        let s = brake_schedule(ms(100));
        let t0 = Instant::now();
        let mut b = SharedBrake::default();
        b.on_throttle(&s, t0);
        b.on_throttle(&s, t0 + ms(50));
        // 99 ms after the last throttle: still braking.
        assert_eq!(b.pre_call_delay(&s, t0 + ms(149), 0), ms(20));
        // 100 ms after it: reset.
        assert_eq!(b.pre_call_delay(&s, t0 + ms(150), 0), Duration::ZERO);
        assert_eq!(b.consecutive(), 0);
        // A throttle after a quiet window starts a new count, even if nobody asked between.
        b.on_throttle(&s, t0 + ms(200));
        b.on_throttle(&s, t0 + ms(400));
        assert_eq!(b.consecutive(), 1);
    }
}
