//! The one integration-test binary of `recorder` (one binary links once: cheaper on a 2-core machine).

mod determinism;
mod har;
mod lint;
mod miss;
mod modes;
mod parallel;
mod roundtrip;
mod service;
mod support;
mod tools;
mod unused;
