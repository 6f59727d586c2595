//! The fairness figure: does winning depend on when a buyer joined? A chi-square test of wins
//! over join-time deciles (each bin the same number of members, in order of joining), with its
//! p-value from the regularized upper incomplete gamma function (a few dozen lines here rather
//! than a statistics crate).

use serde::Serialize;

/// Join-time bins of the test (deciles).
pub const FAIRNESS_BINS: usize = 10;
/// An expected count below this makes the chi-square approximation rough; the report says so.
pub const EXPECTED_WINS_PER_BIN_MIN: f64 = 5.0;

/// One bin: members who joined in one tenth of the order of joining, and how many of them won.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bin {
    /// Earliest and latest join in the bin, in seconds relative to the sale's start
    /// (negative: before it).
    pub joined_from_s: f64,
    pub joined_to_s: f64,
    pub members: u64,
    pub wins: u64,
    /// wins × members of the bin ÷ members.
    pub expected: f64,
}

/// Wins by join time among the members who arrived before the start.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Fairness {
    pub members: u64,
    pub wins: u64,
    pub bins: Vec<Bin>,
    pub chi_square: f64,
    pub degrees_of_freedom: u32,
    /// The chance of a chi-square at least this large if winning did not depend on join time.
    pub p_value: f64,
    /// Some bin expects fewer than `EXPECTED_WINS_PER_BIN_MIN` wins: the p-value is rough.
    pub small_counts: bool,
}

/// Who won, beside the test: the members who arrived before the start, and the bots among
/// them (who joined in its last second).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Winners {
    pub members: u64,
    pub wins: u64,
    pub last_second_members: u64,
    pub last_second_wins: u64,
}

impl Winners {
    /// `joiners` with whether each joined in the last second.
    pub fn of(joiners: &[(bool, Joiner)]) -> Self {
        let count =
            |f: &dyn Fn(&(bool, Joiner)) -> bool| joiners.iter().filter(|j| f(j)).count() as u64;
        Self {
            members: joiners.len() as u64,
            wins: count(&|(_, j)| j.won),
            last_second_members: count(&|(bot, _)| *bot),
            last_second_wins: count(&|(bot, j)| *bot && j.won),
        }
    }
}

/// One member: when it joined (seconds relative to the start) and whether it won a unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Joiner {
    pub joined_s: f64,
    pub won: bool,
}

/// The test over `FAIRNESS_BINS` join-time bins; `None` when there are fewer members than bins
/// or nobody won (nothing to test).
pub fn by_join_time(joiners: &[Joiner]) -> Option<Fairness> {
    let n = joiners.len();
    let wins = joiners.iter().filter(|j| j.won).count() as u64;
    if n < FAIRNESS_BINS || wins == 0 {
        return None;
    }
    let mut sorted = joiners.to_vec();
    sorted.sort_by(|a, b| a.joined_s.total_cmp(&b.joined_s));
    let bins: Vec<Bin> = (0..FAIRNESS_BINS)
        .map(|i| {
            let part = &sorted[i * n / FAIRNESS_BINS..(i + 1) * n / FAIRNESS_BINS];
            let members = part.len() as u64;
            Bin {
                joined_from_s: part.first().map_or(0.0, |j| j.joined_s),
                joined_to_s: part.last().map_or(0.0, |j| j.joined_s),
                members,
                wins: part.iter().filter(|j| j.won).count() as u64,
                expected: wins as f64 * members as f64 / n as f64,
            }
        })
        .collect();
    let chi_square = bins
        .iter()
        .map(|b| (b.wins as f64 - b.expected).powi(2) / b.expected)
        .sum::<f64>();
    let degrees_of_freedom = (FAIRNESS_BINS - 1) as u32;
    Some(Fairness {
        members: n as u64,
        wins,
        small_counts: bins.iter().any(|b| b.expected < EXPECTED_WINS_PER_BIN_MIN),
        bins,
        chi_square,
        degrees_of_freedom,
        p_value: chi_square_p_value(chi_square, degrees_of_freedom),
    })
}

/// P(X ≥ chi_square) for X chi-square distributed with `df` degrees of freedom.
pub fn chi_square_p_value(chi_square: f64, df: u32) -> f64 {
    if chi_square <= 0.0 {
        return 1.0;
    }
    upper_regularized_gamma(f64::from(df) / 2.0, chi_square / 2.0)
}

/// Steps of the series and the continued fraction; both converge in far fewer for the
/// arguments a chi-square test over ten bins gives.
const GAMMA_STEPS_MAX: usize = 500;
const GAMMA_EPSILON: f64 = 1e-14;

/// Q(a, x) = Γ(a, x) / Γ(a): the series for P below a + 1, the continued fraction (modified
/// Lentz) above it, as in Numerical Recipes' `gammq`.
fn upper_regularized_gamma(a: f64, x: f64) -> f64 {
    debug_assert!(a > 0.0 && x >= 0.0, "Q({a}, {x}) is outside its domain");
    if x < a + 1.0 {
        return (1.0 - lower_series(a, x)).clamp(0.0, 1.0);
    }
    upper_fraction(a, x).clamp(0.0, 1.0)
}

fn lower_series(a: f64, x: f64) -> f64 {
    let (mut term, mut sum, mut n) = (1.0 / a, 1.0 / a, a);
    for _ in 0..GAMMA_STEPS_MAX {
        n += 1.0;
        term *= x / n;
        sum += term;
        if term.abs() < sum.abs() * GAMMA_EPSILON {
            break;
        }
    }
    sum * (-x + a * x.ln() - ln_gamma(a)).exp()
}

fn upper_fraction(a: f64, x: f64) -> f64 {
    let tiny = f64::MIN_POSITIVE / GAMMA_EPSILON;
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / tiny;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..GAMMA_STEPS_MAX {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        if d.abs() < tiny {
            d = tiny;
        }
        c = b + an / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < GAMMA_EPSILON {
            break;
        }
    }
    (-x + a * x.ln() - ln_gamma(a)).exp() * h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, nine coefficients: about 15 correct digits).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 − x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + G + 0.5;
    let series = COEFFICIENTS[1..]
        .iter()
        .enumerate()
        .fold(COEFFICIENTS[0], |sum, (i, c)| {
            sum + c / (x + i as f64 + 1.0)
        });
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn p_values_match_the_chi_square_table() {
        // Critical values of the chi-square distribution (any statistics table).
        for (chi, df, p) in [
            (16.919, 9, 0.05),
            (21.666, 9, 0.01),
            (27.877, 9, 0.001),
            (3.841, 1, 0.05),
            (6.635, 1, 0.01),
            (18.307, 10, 0.05),
            (8.343, 9, 0.50),
        ] {
            let got = chi_square_p_value(chi, df);
            assert!(close(got, p, p * 0.01), "chi² {chi}, df {df}: {got} ≠ {p}");
        }
        assert_eq!(chi_square_p_value(0.0, 9), 1.0);
        assert!(chi_square_p_value(500.0, 9) < 1e-90);
    }

    #[test]
    fn ln_gamma_of_whole_and_half_numbers() {
        // Γ(5) = 24, Γ(0.5) = √π, Γ(4.5) = 11.631728…
        assert!(close(ln_gamma(5.0), 24f64.ln(), 1e-12));
        assert!(close(
            ln_gamma(0.5),
            std::f64::consts::PI.sqrt().ln(),
            1e-12
        ));
        assert!(close(ln_gamma(4.5), 11.631_728_396_567_45_f64.ln(), 1e-12));
    }

    #[test]
    fn wins_spread_evenly_give_zero_and_wins_of_the_last_joiners_a_tiny_p() {
        let joiners = |won: &dyn Fn(usize) -> bool| -> Vec<Joiner> {
            (0..100)
                .map(|i| Joiner {
                    joined_s: i as f64 - 100.0,
                    won: won(i),
                })
                .collect()
        };
        let even = by_join_time(&joiners(&|i| i % 5 == 0)).unwrap();
        assert_eq!(even.wins, 20);
        assert_eq!(even.chi_square, 0.0);
        assert_eq!(even.p_value, 1.0);
        assert_eq!(even.degrees_of_freedom, 9);
        assert!(even.bins.iter().all(|b| b.members == 10 && b.wins == 2));
        assert!(even.small_counts, "2 expected per bin is a small count");
        // The last 20 joiners take every win.
        let late = by_join_time(&joiners(&|i| i >= 80)).unwrap();
        assert!(close(late.chi_square, 8.0 * 2.0 + 2.0 * 64.0 / 2.0, 1e-9));
        assert!(late.p_value < 1e-12, "{}", late.p_value);
        assert_eq!(late.bins[9].joined_from_s, -10.0);
        // Nothing to test without wins or without enough members.
        assert_eq!(by_join_time(&joiners(&|_| false)), None);
        assert_eq!(
            by_join_time(&[Joiner {
                joined_s: 0.0,
                won: true
            }]),
            None
        );
    }
}
