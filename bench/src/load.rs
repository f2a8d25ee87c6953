//! placeholder
#[derive(clap::Args)]
pub struct Args {}
pub fn main(_a: Args) -> anyhow::Result<()> {
    Ok(())
}
