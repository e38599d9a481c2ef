use super::*;

#[test]
fn fingerprints_do_not_carry_the_value() {
    assert_ne!(fingerprint("secret"), "secret");
    assert_eq!(fingerprint("secret"), fingerprint("secret"));
    assert_eq!(fingerprint("secret").len(), 12);
}
