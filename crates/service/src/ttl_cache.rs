//! `TtlCache`: a bounded concurrent cache whose entries are kept for a time to live, on
//! quick_cache. Concurrent misses of one key share a single computation; a computation that
//! fails (or yields nothing) keeps nothing, so the next caller tries again.
//!
//! quick_cache, not moka: the buyer window inserts an entry for nearly every buy while a sale
//! sells, and moka's insert (its concurrent table, operation logs and housekeeping) was the
//! largest single cost of a durable buy (BENCHMARKS.md, 2026-12-01). quick_cache has no time
//! to live, so each value carries when it was kept: an expired entry is a miss, and
//! `forget_expired` sweeps them out so memory follows the traffic, not the cap.

use quick_cache::UnitWeighter;
use quick_cache::sync::{Cache, DefaultLifecycle, EntryAction, EntryResult};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Entries the cache makes room for at first; it grows towards its cap as keys come.
const ENTRIES_AT_FIRST_MAX: u64 = 65_536;

type Inner<K, V> = Cache<
    K,
    (V, Instant),
    UnitWeighter,
    foldhash::fast::RandomState,
    DefaultLifecycle<K, (V, Instant)>,
>;

pub struct TtlCache<K, V> {
    cache: Inner<K, V>,
    /// `None`: entries live until evicted for room.
    ttl: Option<Duration>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// At most `entries_max` entries (the least used go first when full), each kept for `ttl`.
    /// The hasher is seeded per process, so clients cannot aim at one bucket.
    pub fn new(ttl: Option<Duration>, entries_max: u64) -> Self {
        let entries_max = entries_max.max(1);
        let cache = Cache::with(
            usize::try_from(entries_max.min(ENTRIES_AT_FIRST_MAX)).unwrap_or(usize::MAX),
            entries_max,
            UnitWeighter,
            foldhash::fast::RandomState::default(),
            DefaultLifecycle::default(),
        );
        Self { cache, ttl }
    }

    fn fresh(&self, kept_at: Instant) -> bool {
        self.ttl.is_none_or(|ttl| kept_at.elapsed() < ttl)
    }

    /// The value kept for `key`, if it has not expired.
    pub fn get(&self, key: &K) -> Option<V> {
        self.cache
            .get(key)
            .filter(|(_, kept_at)| self.fresh(*kept_at))
            .map(|(value, _)| value)
    }

    /// The value kept for `key`, or `compute`'s, which is then kept. While a computation for
    /// `key` runs, other callers wait for it and share its value. An error keeps nothing.
    /// Also says whether this call computed the value.
    pub async fn get_or_try_insert_with<E>(
        &self,
        key: &K,
        compute: impl Future<Output = Result<V, E>>,
    ) -> Result<(V, bool), E> {
        let entry = self
            .cache
            .entry_async(key, |_, (value, kept_at)| {
                if self.fresh(*kept_at) {
                    EntryAction::Retain(value.clone())
                } else {
                    EntryAction::ReplaceWithGuard
                }
            })
            .await;
        let guard = match entry {
            EntryResult::Retained(value) => return Ok((value, false)),
            EntryResult::Replaced(guard, _) | EntryResult::Vacant(guard) => guard,
            // Neither is asked for (no removal, no timeout): compute without keeping.
            EntryResult::Removed(..) | EntryResult::Timeout => return Ok((compute.await?, true)),
        };
        // Dropped on an error (or if this future is dropped): the next waiter computes.
        let value = compute.await?;
        let _ = guard.insert((value.clone(), Instant::now()));
        Ok((value, true))
    }

    /// As `get_or_try_insert_with`, for a computation that does not await; `None` keeps
    /// nothing.
    pub fn get_or_insert_with(&self, key: &K, compute: impl FnOnce() -> Option<V>) -> Option<V> {
        let entry = self.cache.entry(key, None, |_, (value, kept_at)| {
            if self.fresh(*kept_at) {
                EntryAction::Retain(value.clone())
            } else {
                EntryAction::ReplaceWithGuard
            }
        });
        let guard = match entry {
            EntryResult::Retained(value) => return Some(value),
            EntryResult::Replaced(guard, _) | EntryResult::Vacant(guard) => guard,
            EntryResult::Removed(..) | EntryResult::Timeout => return compute(),
        };
        let value = compute()?;
        let _ = guard.insert((value.clone(), Instant::now()));
        Some(value)
    }

    /// Keeps `value` for `key`, replacing what was there.
    pub fn insert(&self, key: K, value: V) {
        self.cache.insert(key, (value, Instant::now()));
    }

    pub fn invalidate(&self, key: &K) {
        self.cache.remove(key);
    }

    /// Drops every expired entry. Called every few seconds: an expired entry already reads
    /// as a miss, this only gives its memory back.
    pub fn forget_expired(&self) {
        if self.ttl.is_some() {
            self.cache.retain(|_, (_, kept_at)| self.fresh(*kept_at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_misses_share_one_computation() {
        let cache: Arc<TtlCache<u32, u32>> =
            Arc::new(TtlCache::new(Some(Duration::from_secs(60)), 100));
        let computed = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cache, computed) = (cache.clone(), computed.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_try_insert_with(&7, async {
                            computed.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok::<_, ()>(42)
                        })
                        .await
                })
            })
            .collect();
        let mut fresh = 0;
        for task in tasks {
            let (value, computed_here) = task.await.expect("task").expect("value");
            assert_eq!(value, 42);
            fresh += usize::from(computed_here);
        }
        assert_eq!(computed.load(Ordering::SeqCst), 1);
        assert_eq!(fresh, 1);
        assert_eq!(cache.get(&7), Some(42));
    }

    #[tokio::test]
    async fn an_error_keeps_nothing_and_an_expired_entry_is_a_miss() {
        let cache: TtlCache<u32, u32> = TtlCache::new(Some(Duration::from_millis(30)), 100);
        assert_eq!(
            cache
                .get_or_try_insert_with(&1, async { Err::<u32, _>("broken") })
                .await,
            Err("broken")
        );
        assert_eq!(cache.get(&1), None);
        assert_eq!(
            cache
                .get_or_try_insert_with(&1, async { Ok::<_, ()>(5) })
                .await,
            Ok((5, true))
        );
        assert_eq!(
            cache
                .get_or_try_insert_with(&1, async { Ok::<_, ()>(6) })
                .await,
            Ok((5, false))
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(cache.get(&1), None, "expired");
        assert_eq!(cache.get_or_insert_with(&2, || Some(9)), Some(9));
        assert_eq!(
            cache
                .get_or_try_insert_with(&1, async { Ok::<_, ()>(6) })
                .await,
            Ok((6, true)),
            "an expired entry is computed again"
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(cache.cache.len(), 2, "expired entries are held until swept");
        cache.forget_expired();
        assert!(cache.cache.is_empty());
        assert_eq!(cache.get_or_insert_with(&3, || None), None);
        assert_eq!(cache.get(&3), None, "nothing computed, nothing kept");
    }

    #[test]
    fn without_a_ttl_entries_stay_until_invalidated() {
        let cache: TtlCache<u32, &str> = TtlCache::new(None, 10);
        assert_eq!(cache.get_or_insert_with(&1, || Some("a")), Some("a"));
        assert_eq!(cache.get_or_insert_with(&1, || Some("b")), Some("a"));
        cache.forget_expired();
        assert_eq!(cache.get(&1), Some("a"));
        cache.invalidate(&1);
        assert_eq!(cache.get(&1), None);
    }
}
