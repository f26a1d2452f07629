//! Does nothing: measures the cost of a task itself (dispatch, sandbox, result).
fn main() {}
