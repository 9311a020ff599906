//! Prints a household task and plays the expert's plan in it, observation by observation.
//!
//! cargo run -p hx-worker --example household_episode -- household/train/3

use hx_common::task::TaskRef;
use hx_worker::env::Environment;
use hx_worker::env::household::{self, Household};

fn main() -> anyhow::Result<()> {
    let name: TaskRef = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "household/train/0".into())
        .parse()?;
    let task = household::generate(&name)?;
    let mut env = Household::new();
    let reset = env.reset(&name)?;
    println!("{}\n\nYour task is to: {}\n", reset.observation, reset.goal);
    for cmd in &task.plan {
        let step = env.step(cmd)?;
        println!("> {cmd}\n{}\n", step.observation);
    }
    println!("admissible now: {:?}", env.admissible_commands());
    Ok(())
}
