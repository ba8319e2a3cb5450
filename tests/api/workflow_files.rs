//! Invalid workflow files are refused at load, each problem with its file,
//! line and reason; `tuma workflows show` prints Mermaid.

use std::path::PathBuf;

use tuma::workflow::workers::built_in_actions;
use tuma::workflow::{mermaid, Workflows, BUILT_IN};

const PAYOUT: &str = BUILT_IN[0].1;

/// Loads the payout file with `from` replaced by `to`, expecting failure;
/// returns the problems as text.
fn problems_after(from: &str, to: &str) -> Vec<String> {
    assert!(PAYOUT.contains(from), "the fixture no longer contains {from:?}");
    let text = PAYOUT.replacen(from, to, 1);
    let known = built_in_actions(&Default::default()).known_names();
    match Workflows::from_sources([(PathBuf::from("workflows/payout.toml"), text)], &known) {
        Ok(_) => panic!("an invalid workflow was accepted after replacing {from:?}"),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    }
}

fn line_of(text: &str, needle: &str) -> usize {
    text[..text.find(needle).unwrap()].matches('\n').count() + 1
}

fn assert_reported(problems: &[String], expected: &str) {
    assert!(
        problems.iter().any(|p| p.contains(expected)),
        "expected {expected:?} among {problems:#?}"
    );
}

#[test]
fn the_built_in_workflows_are_valid() {
    let known = built_in_actions(&Default::default()).known_names();
    let workflows = Workflows::built_in(&known).unwrap();
    assert_eq!(
        workflows.kinds().collect::<Vec<_>>(),
        vec!["collection", "loan", "payout", "reversal"]
    );
}

#[test]
fn a_transition_to_an_unknown_state_is_refused_at_its_line() {
    let text = PAYOUT.replacen("to = \"completed\"", "to = \"complete\"", 1);
    let line = line_of(&text, "to = \"complete\"");
    let problems = problems_after("to = \"completed\"", "to = \"complete\"");
    // The problem points at the transition's table, a line or two above.
    assert!(
        problems.iter().any(|p| p.contains("goes to unknown state \"complete\"")
            && p.starts_with("workflows/payout.toml:")
            && p.split(':').nth(1).unwrap().parse::<usize>().unwrap() <= line),
        "{problems:#?}"
    );
}

#[test]
fn an_unknown_action_is_refused_naming_what_exists() {
    let problems = problems_after("on_enter = [\"submit\"]", "on_enter = [\"sumbit\"]");
    assert_reported(&problems, "unknown action \"sumbit\" (registered actions:");
}

#[test]
fn an_unknown_guard_is_refused() {
    let problems = problems_after("guard = \"actor_is_not_creator\"", "guard = \"anyone\"");
    assert_reported(&problems, "unknown guard \"anyone\"");
}

#[test]
fn an_unreachable_state_is_refused() {
    let problems = problems_after(
        "event = \"reject\"\nfrom = [\"awaiting_approval\"]",
        "event = \"reject\"\nfrom = [\"rejected\"]",
    );
    assert_reported(
        &problems,
        "state \"rejected\" is unreachable from the initial state \"pending\"",
    );
}

#[test]
fn a_state_with_no_path_to_a_final_state_is_refused() {
    let text = PAYOUT
        .replacen(
            "[[transitions]]\nevent = \"resolved_succeeded\"\nfrom = [\"unresolved\"]\nto = \"completed\"\n\n[[transitions]]\nevent = \"resolved_failed\"\nfrom = [\"unresolved\"]\nto = \"failed\"\n",
            "",
            1,
        )
        .replace("from = [\"processing\", \"unresolved\"]", "from = [\"processing\"]");
    assert!(!text.contains("\"unresolved\"]"), "the fixture changed");
    let known = built_in_actions(&Default::default()).known_names();
    let stuck: Vec<String> = match Workflows::from_sources([(PathBuf::from("workflows/payout.toml"), text)], &known) {
        Ok(_) => panic!("a workflow with a dead end was accepted"),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    };
    assert_reported(&stuck, "state \"unresolved\" has no path to a final state");
}

#[test]
fn a_final_state_with_an_undeclared_exit_is_refused() {
    let problems = problems_after(
        "event = \"resolved_failed\"\nfrom = [\"unresolved\"]",
        "event = \"resolved_failed\"\nfrom = [\"unresolved\", \"completed\"]",
    );
    assert_reported(
        &problems,
        "final state \"completed\" has an undeclared exit to \"failed\"",
    );
}

#[test]
fn a_timer_firing_an_event_its_state_cannot_take_is_refused() {
    let problems = problems_after("event = \"approval_expired\" }", "event = \"provider_succeeded\" }");
    assert_reported(&problems, "timer \"approval_window\" fires event \"provider_succeeded\", which has no transition from \"awaiting_approval\"");
}

#[test]
fn malformed_toml_and_unknown_keys_are_refused_at_their_line() {
    let problems = problems_after("final = true", "final = maybe");
    assert!(
        problems[0].starts_with(&format!("workflows/payout.toml:{}:", line_of(PAYOUT, "final = true"))),
        "{problems:#?}"
    );
    let problems = problems_after(
        "description = \"The provider confirmed the payment\"",
        "descripton = \"typo\"",
    );
    assert_reported(&problems, "unknown field `descripton`");
}

#[test]
fn workflows_render_as_mermaid_state_diagrams() {
    let known = built_in_actions(&Default::default()).known_names();
    let workflows = Workflows::built_in(&known).unwrap();
    let payout = workflows.get("payout").unwrap();
    let diagram = mermaid::render(payout, Some("processing"));
    assert!(diagram.contains("stateDiagram-v2\n    [*] --> pending\n"), "{diagram}");
    assert!(diagram.contains("    processing --> completed : provider_succeeded\n"));
    assert!(diagram.contains("    awaiting_approval --> pending : approve [actor_is_not_creator]\n"));
    assert!(diagram.contains("    completed --> [*]\n"));
    assert!(diagram.contains("class processing current"));
    // Every transition of the file appears as an edge.
    for transition in &payout.transitions {
        for from in &transition.from {
            assert!(diagram.contains(&format!("    {from} --> {} : {}", transition.to, transition.event)));
        }
    }
}
