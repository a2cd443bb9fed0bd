//! Where a deploy's progress lines go: straight to stderr, or, while a
//! thread deploys one host of a parallel batch, into that host's block,
//! printed whole once the batch is done (`rollout::run_batch`).

use std::cell::RefCell;

thread_local! {
    /// Where `say` puts lines while this thread deploys one host of a
    /// parallel batch; `None`: straight to stderr.
    pub static OUTPUT: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Prints a line of a deploy's progress, or keeps it with the output of
/// the host this thread deploys.
pub fn say(line: String) {
    let kept = OUTPUT.with(|output| match output.borrow_mut().as_mut() {
        Some(lines) => {
            lines.push(line.clone());
            true
        }
        None => false,
    });
    if !kept {
        eprintln!("{line}");
    }
}
