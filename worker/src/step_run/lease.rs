//! The lease keeper: renews the claim every heartbeat and says when the step must stop (deadline, SIGTERM,
//! lost claim).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::warn;

use super::claim::Claim;
use super::outcome::StepReport;
use super::{chrono_of, StepRun};
use crate::domain::step::renew_patch;
use crate::domain::PatchOutcome;
use crate::ports::StoreError;

/// Why the step must stop starting work, in rising order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Stop {
    /// The step deadline passed: calls in flight finish, no new one starts.
    Deadline,
    /// SIGTERM: no new call starts; calls in flight get most of the grace period to finish.
    Draining,
    /// The grace period is nearly over: calls in flight are abandoned, the step ends (releases) now.
    Shutdown,
    /// The claim is no longer ours (or cannot be proven ours): write nothing more.
    Lost,
}

/// The running step's view of [`Stop`].
pub(super) struct Guard(pub(super) watch::Receiver<Option<Stop>>);

impl Guard {
    pub(super) fn current(&self) -> Option<Stop> {
        *self.0.borrow()
    }

    /// Resolves at the first [`Stop`] of any kind: a caller still waiting for quota or a rate slot gives up then.
    pub(super) async fn stopped(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|s| s.is_some()).await;
    }

    /// Resolves once the step must abandon calls in flight (end of the grace period, or a lost claim).
    pub(super) async fn abandon(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|s| matches!(s, Some(Stop::Shutdown | Stop::Lost))).await;
    }
}

pub(super) fn set_stop(tx: &watch::Sender<Option<Stop>>, stop: Stop) {
    tx.send_if_modified(|cur| {
        if cur.is_none_or(|c| stop > c) {
            *cur = Some(stop);
            true
        } else {
            false
        }
    });
}

/// Time kept at the end of the shutdown grace period for the release write.
pub(super) fn release_margin(grace: Duration) -> Duration {
    (grace / 2).min(Duration::from_secs(2))
}

impl StepRun<'_> {
    pub(super) fn lost(&self, claim: &Claim, reason: String) -> StepReport {
        warn!(event = "finalize_failed", reason = %reason, "the claim was lost; nothing more is written");
        StepReport::LostClaim {
            run_id: self.run.to_string(),
            step_id: claim.step_id.to_string(),
            reason,
        }
    }

    /// Renews the lease every heartbeat and raises [`Stop`]s: `Lost` when a renewal finds another claim, or at the
    /// fence — the moment the lease may have lapsed without a renewal having confirmed it (`confirmed_until` less
    /// [`fence_margin`]) — `Deadline` at the step deadline, `Shutdown` on SIGTERM. The renewal runs beside the other
    /// arms, never inside one, so a slow renewal hides neither SIGTERM, the deadline, an abandon nor the fence. Never
    /// returns; it is dropped with the stages.
    pub(super) async fn keep_alive(
        &self,
        claim: &Claim,
        tx: &watch::Sender<Option<Stop>>,
        deadline: Instant,
    ) -> std::convert::Infallible {
        let w = self.w;
        let lease = w.settings.lease;
        let heartbeat = w.settings.lifecycle.heartbeat.max(Duration::from_millis(50));
        let margin = fence_margin(lease);
        // The lease was written as `now + lease` with `now` read before the claim transaction: count from there, and
        // renew at once if the claim itself took longer than a heartbeat.
        let mut confirmed_until = claim.started + lease;
        let mut next = claim.started + heartbeat;
        let (mut deadline_seen, mut shutdown_seen, mut lost) = (false, false, false);
        let grace = w.settings.lifecycle.shutdown_grace;
        // Far away until SIGTERM; then the moment calls in flight are abandoned so the release fits in the grace.
        let mut abandon_at: Option<Instant> = None;
        type Renewal<'r> =
            Pin<Box<dyn Future<Output = (Instant, Option<Result<PatchOutcome, StoreError>>)> + Send + 'r>>;
        let mut renewal: Option<Renewal<'_>> = None;
        loop {
            let fence_at = confirmed_until.checked_sub(margin).unwrap_or(confirmed_until);
            tokio::select! {
                _ = tokio::time::sleep_until(next), if !lost && renewal.is_none() => {
                    let sent = Instant::now();
                    let rendered = self.rendered.load(std::sync::atomic::Ordering::SeqCst);
                    let patch = renew_patch(&claim.step_id, w.clock.now() + chrono_of(lease), rendered, self.charts_stored());
                    let until = confirmed_until;
                    renewal = Some(Box::pin(async move {
                        let r = tokio::time::timeout_at(until, async {
                            let _own = claim.writes.lock().await;
                            w.flow_runs.patch_owned_step(self.run, &claim.token, &patch).await
                        })
                        .await
                        .ok();
                        (sent, r)
                    }));
                }
                (sent, r) = async { renewal.as_mut().expect("polled only while a renewal runs").await }, if renewal.is_some() => {
                    renewal = None;
                    match r {
                        Some(Ok(o)) if o.landed() => confirmed_until = confirmed_until.max(sent + lease),
                        Some(Ok(other)) => {
                            warn!(event = "lease_lost", outcome = ?other, "lease renewal found the step no longer ours");
                            lost = true;
                            set_stop(tx, Stop::Lost);
                        }
                        Some(Err(e)) => warn!(event = "lease_renewal_failed", error = %e, "lease renewal failed; retrying at the next heartbeat"),
                        None => warn!(event = "lease_renewal_failed", "lease renewal did not answer before the lease ran out"),
                    }
                    next = Instant::now() + heartbeat;
                }
                _ = tokio::time::sleep_until(fence_at), if !lost => {
                    // The document's lease may be over (it is written to the second, and clocks differ): another
                    // instance may claim the step now, so this holder starts nothing and writes nothing more.
                    warn!(event = "lease_lost", marginMs = margin.as_millis() as u64, "the lease may have lapsed before a renewal confirmed it: no call starts, nothing more is written");
                    lost = true;
                    renewal = None;
                    set_stop(tx, Stop::Lost);
                }
                _ = tokio::time::sleep_until(deadline), if !deadline_seen => {
                    deadline_seen = true;
                    warn!(event = "step_deadline", "step deadline reached: no new Chart-IMG call starts");
                    set_stop(tx, Stop::Deadline);
                }
                _ = w.shutdown.wait(), if !shutdown_seen => {
                    shutdown_seen = true;
                    warn!(event = "step_draining", graceMs = grace.as_millis() as u64, "shutting down: no new Chart-IMG call starts");
                    set_stop(tx, Stop::Draining);
                    abandon_at = Some(Instant::now() + grace.saturating_sub(release_margin(grace)));
                }
                _ = tokio::time::sleep_until(abandon_at.unwrap_or_else(Instant::now)), if abandon_at.is_some() => {
                    abandon_at = None;
                    warn!(event = "step_abandoned_calls", "grace period nearly over: abandoning calls in flight to release the step");
                    set_stop(tx, Stop::Shutdown);
                }
            }
        }
    }
}

/// How long before the end of its confirmed lease a holder stops: the document's lease is written to the whole
/// second (up to 1 s earlier than the holder counts) and other instances' clocks may run ahead (allowed: 0.5 s);
/// at most a third of the lease, so short test leases keep room to work.
pub(super) fn fence_margin(lease: Duration) -> Duration {
    Duration::from_millis(1500).min(lease / 3)
}
