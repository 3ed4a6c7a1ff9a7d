//! The viewer ports as `/1/checkin` and `try` see them: their counts handed to the cluster.

use super::*;

#[test]
fn no_port_with_room_names_nothing() {
    let bound = [SocketAddr::from(([127, 0, 0, 1], 9100))];
    let ports = Arc::new(ViewerPorts::new(&bound, None, 1, Metrics::new()));
    assert_eq!(ports.pick_for_checkin(), Some(("127.0.0.1".into(), 9100)));
    let _held = ports.try_enter(0).unwrap();
    assert!(ports.try_enter(0).is_none(), "its share is 1");
    ports.cluster.set_others(vec![PortLoad {
        host: "h".into(),
        port: 1,
        viewers: 7,
        capacity: 7,
        web_port: None,
    }]);
    assert_eq!(ports.pick_for_checkin(), None);
    assert_eq!(ports.cluster.other_node(), None);
}
