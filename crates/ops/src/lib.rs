//! What an operator runs beside MatchStream nodes, knowing them only from the outside (and the
//! open-file limit that the node commands raise, `limits`):
//! `doctor` reads this machine's limits and says which would stop a node from holding N viewers,
//! and the command that lifts each; `top` shows a node's (and its cluster's) figures live in a
//! terminal, from the node's `/ops.json`.

pub mod doctor;
pub mod limits;
pub mod top;
