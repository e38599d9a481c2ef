use super::*;

#[test]
fn sources_are_limited_per_ipv4_address_and_per_ipv6_64() {
    assert_eq!(source_tag("10.0.0.7"), "ip:10.0.0.7");
    assert_eq!(source_tag("::ffff:10.0.0.7"), "ip:10.0.0.7", "IPv4-mapped");
    for one_client in ["2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"] {
        assert_eq!(source_tag(one_client), "ip:2001:db8:1:2::/64");
    }
    assert_eq!(source_tag("2001:db8:1:3::1"), "ip:2001:db8:1:3::/64");
    assert_eq!(source_tag("::1"), "ip:0:0:0:0::/64");
    assert_eq!(source_tag("not-an-address"), "ip:not-an-address");
}
