//! The README's library example is the project under examples/readme, built by
//! `cargo build --workspace` with exactly the dependencies the README's `cargo add` lines give:
//! the README must show its src/main.rs unchanged.

#[test]
fn readme_library_example_is_examples_readme() {
    let readme = include_str!("../README.md");
    let example = include_str!("../examples/readme/src/main.rs");
    let block = readme
        .split_once("## The library")
        .and_then(|(_, section)| section.split_once("```rust"))
        .and_then(|(_, rest)| rest.split_once('\n'))
        .and_then(|(_, code)| code.split_once("\n```"))
        .map(|(code, _)| code);
    assert_eq!(
        block.map(str::trim_end),
        Some(example.trim_end()),
        "README.md's library example differs from examples/readme/src/main.rs"
    );
}
