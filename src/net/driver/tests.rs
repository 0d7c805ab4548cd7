use super::startup::same_or_suffixed;

#[test]
fn a_suffixed_name_is_recognised_as_the_same_file() {
    assert!(same_or_suffixed("a.txt", "a.txt"));
    assert!(same_or_suffixed("a (2).txt", "a.txt"));
    assert!(same_or_suffixed("noext (13)", "noext"));
    assert!(!same_or_suffixed("a (x).txt", "a.txt"));
    assert!(!same_or_suffixed("ab.txt", "a.txt"));
    assert!(!same_or_suffixed("a ().txt", "a.txt"));
}
