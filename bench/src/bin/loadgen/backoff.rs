//! The reconnection delay of the official socket.io client, with its defaults: 1 s, doubling
//! with each failed attempt up to 5 s, each delay moved up or down by a random share of up to
//! half of it. A storm of clients that all lost their server at once comes back in this shape.

use std::time::Duration;

const BASE_MS: f64 = 1000.0;
const MAX_MS: f64 = 5000.0;
const RANDOMIZATION: f64 = 0.5;

pub struct Backoff {
    attempts: i32,
    /// xorshift64 state: enough randomness for jitter, and reproducible per client.
    state: u64,
}

impl Backoff {
    pub fn new(seed: u64) -> Backoff {
        Backoff {
            attempts: 0,
            // Never zero, which xorshift would keep forever.
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// The delay before the next attempt. The first attempt after a drop waits too, as the
    /// official client's does.
    pub fn next_delay(&mut self) -> Duration {
        let ms = BASE_MS * 2f64.powi(self.attempts);
        self.attempts = (self.attempts + 1).min(16);
        let random = self.random();
        let deviation = (random * RANDOMIZATION * ms).floor();
        // The client picks the direction from a digit of the same random number.
        let ms = if (random * 10.0).floor() as u64 & 1 == 0 {
            ms - deviation
        } else {
            ms + deviation
        };
        Duration::from_millis(ms.min(MAX_MS) as u64)
    }

    /// After a successful connection: the next drop starts again from the base delay.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }

    /// Uniform in [0, 1).
    fn random(&mut self) -> f64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_half_either_way_up_to_the_cap() {
        for seed in 0..200 {
            let mut backoff = Backoff::new(seed);
            let delays: Vec<u64> = (0..6)
                .map(|_| backoff.next_delay().as_millis() as u64)
                .collect();
            for (attempt, &delay) in delays.iter().enumerate() {
                let base = 1000 * (1 << attempt);
                assert!(
                    delay >= (base / 2).min(5000),
                    "attempt {attempt}: {delay} ms"
                );
                assert!(
                    delay <= (base * 3 / 2).min(5000),
                    "attempt {attempt}: {delay} ms"
                );
            }
            backoff.reset();
            assert!(backoff.next_delay() <= Duration::from_millis(1500));
        }
    }

    #[test]
    fn first_delays_spread_over_the_whole_window() {
        let delays: Vec<u64> = (0..1000)
            .map(|seed| Backoff::new(seed).next_delay().as_millis() as u64)
            .collect();
        assert!(delays.iter().any(|&d| d < 700), "none early");
        assert!(delays.iter().any(|&d| d > 1300), "none late");
    }
}
