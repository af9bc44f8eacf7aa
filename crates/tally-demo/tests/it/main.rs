//! Integration tests of the demo generator: properties of whole generated data sets,
//! checked with small reference computations over the public API only.

mod data;
mod determinism;
mod realism;
mod validity;
