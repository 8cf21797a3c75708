//! The policy engine: TOML policies (model), compiled matchers (compile), the decision
//! (eval), request-target canonicalization (normalize) and the hot-reloaded set (store).

pub mod compile;
pub mod eval;
pub mod model;
pub mod normalize;
pub mod store;

pub use compile::{PolicyError, PolicySet};
pub use eval::{Cause, Decision, RequestFacts, Shadow, Verdict};
pub use model::{Effect, Mode};
pub use normalize::{Scheme, Target};
pub use store::PolicyStore;
