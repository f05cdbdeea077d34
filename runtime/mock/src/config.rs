//! The mock's settings (`gw mock …` flags).

/// Settings of the mock upstream (`gw mock …` flags).
#[derive(clap::Args, Debug, Clone)]
pub struct MockConfig {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub listen: String,
    /// Delay before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Share of requests (0.0..=1.0) answered with --fail-status.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fail_rate: f64,
    /// Status of the answers --fail-rate picks.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(200..=599))]
    pub fail_status: u16,
    /// Chunks in a streamed completion (and words in a non-streamed one).
    #[arg(long, default_value_t = 8)]
    pub stream_chunks: usize,
    /// Pause between the chunks of a streamed completion, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub chunk_delay_ms: u64,
    /// Keep a log of received requests for GET /mock/requests (the last 1000); --record=false
    /// turns it off.
    #[arg(
        long,
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub record: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            listen: "127.0.0.1:9100".to_owned(),
            delay_ms: 0,
            fail_rate: 0.0,
            fail_status: 500,
            stream_chunks: 8,
            chunk_delay_ms: 20,
            record: true,
        }
    }
}

pub(crate) fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err("must be between 0.0 and 1.0".to_owned())
    }
}
