use anyhow::Result; pub fn demo() -> Result<()> { anyhow::bail!("demo: not written yet") }
