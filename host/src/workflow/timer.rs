//! A durable timer firing: a callback timeout or a retry-after claims the
//! execution it guards and resumes its step.

use super::driver::{Durability, Known};
use super::transition::Event;
use super::*;

impl Workflows {
    /// Fires one due timer: claims the execution if it still waits for it.
    pub async fn fire_timer(self: &Arc<Self>, timer: Timer) -> Result<(), StoreError> {
        // Result deliveries are fired by `crate::delivery`.
        if matches!(timer.kind, TimerKind::Delivery { .. }) {
            return Ok(());
        }
        let id = timer.execution_id.clone();
        let event = Event::TimerFired(timer.clone());
        match self
            .settle(&id, &event, Durability::Lazy, None, Known::default())
            .await?
        {
            Ok(_) => Ok(()),
            // The wait it guarded already ended (a callback won, an
            // operator cancelled, the execution is gone).
            Err(_) => crate::store::remove_timer(self.store.as_ref(), timer).await,
        }
    }
}
