//! Removing an ended execution: by an operator, or by retention.

use super::*;
use crate::model::{Delivery, DeliveryState};

/// `e1` completed, with a callback `c1` it registered on the way and its
/// result being delivered (pending, timer at `NOW + 10`).
async fn completed_while_delivering(w: &World) -> Delivery {
    w.start(&["a"]).await;
    w.register("c1").await;
    w.returned(Ok(Outcome::Complete(doc("done")))).await;
    let exec = w.exec().await;
    let mut delivery = Delivery::of_end(&exec, "https://client.example/r", "msg_1".into(), NOW);
    delivery.due_ms = Some(NOW + 10);
    w.store
        .apply(&Change {
            deliveries: vec![
                Delivery::armed("e1", "https://client.example/r", NOW),
                delivery.clone(),
            ],
            add_timers: delivery.timer().into_iter().collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    delivery
}

#[tokio::test]
async fn only_an_ended_execution_is_removed() {
    let w = World::new();
    w.start(&["a"]).await;
    for due in [None, Some(u64::MAX)] {
        assert_eq!(
            w.decide(&Event::Remove { due }).await.unwrap_err(),
            Refusal::WrongState(ExecState::Running)
        );
    }
    w.suspend_on("c1", None).await;
    assert_eq!(
        w.decide(&Event::Remove { due: None }).await.unwrap_err(),
        Refusal::WrongState(ExecState::Suspended)
    );
}

#[tokio::test]
async fn an_operator_removes_everything_of_the_execution_and_stops_its_delivery() {
    let w = World::new();
    let delivery = completed_while_delivering(&w).await;
    let t = w.step(&Event::Remove { due: None }).await;
    assert_eq!(t.from, Some(ExecState::Completed));
    assert_eq!(t.effects, Effects::default());
    let removal = t.change.remove.expect("a removal");
    assert_eq!(removal.callbacks, ["c1"]);
    assert_eq!(removal.deliveries.len(), 2);
    assert_eq!(t.change.remove_timers, [delivery.timer().unwrap()]);
    assert!(w.store.execution("e1").await.unwrap().is_none());
    assert!(w.store.callback("c1").await.unwrap().is_none());
    assert!(w.store.deliveries_of("e1").await.unwrap().is_empty());
    assert!(w.timers().await.is_empty());
}

#[tokio::test]
async fn retention_waits_for_the_cut_off_and_for_the_delivery_to_end() {
    let w = World::new();
    let mut delivery = completed_while_delivering(&w).await;
    let ended = w.exec().await.updated_ms;
    let too_early = Event::Remove {
        due: Some(ended - 1),
    };
    assert_eq!(w.decide(&too_early).await.unwrap_err(), Refusal::NotDue);
    let due = Event::Remove { due: Some(ended) };
    assert_eq!(
        w.decide(&due).await.unwrap_err(),
        Refusal::NotDue,
        "still delivering"
    );

    delivery.version += 1;
    delivery.state = DeliveryState::Delivered;
    delivery.due_ms = None;
    w.store
        .apply(&Change {
            deliveries: vec![delivery],
            remove_timers: w.timers().await,
            ..Default::default()
        })
        .await
        .unwrap();
    let t = w.step(&due).await;
    assert!(t.change.remove_timers.is_empty());
    assert!(w.store.execution("e1").await.unwrap().is_none());
}

#[tokio::test]
async fn a_removal_decided_before_a_retry_is_refused() {
    let w = World::new();
    w.start(&["a"]).await;
    w.returned(Err(StepError::Trap("x".into()))).await;
    let removal = w.decide(&Event::Remove { due: None }).await.unwrap();
    w.step(&Event::Retry).await;
    assert!(matches!(
        w.store.apply(&removal.change).await,
        Err(crate::store::StoreError::Conflict(_))
    ));
    assert_eq!(w.exec().await.state, ExecState::Running);
}
