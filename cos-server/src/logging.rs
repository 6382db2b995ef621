//! Log set-up from `LOG_LEVEL` and `LOG_STYLE`, through `tracing`.

use std::io::IsTerminal;

use cos_core::settings::{LogStyle, LoggingSettings};
use tracing_subscriber::EnvFilter;

/// `LOG_LEVEL` is not a valid log filter.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting LOG_LEVEL={level:?}: {reason}")]
pub struct LogLevelError {
    level: String,
    reason: String,
}

/// Installs the global subscriber; a second call (tests, the quick start) leaves the first in place.
pub fn init(settings: &LoggingSettings) -> Result<(), LogLevelError> {
    let filter = EnvFilter::try_new(&settings.level).map_err(|error| LogLevelError {
        level: settings.level.clone(),
        reason: format!(
            "{error}; use a level such as info or a filter such as info,cos_core=debug"
        ),
    })?;
    let colours = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colours);
    let _already_installed = match settings.style {
        LogStyle::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogStyle::Simple => builder
            .compact()
            .without_time()
            .with_target(false)
            .try_init(),
        LogStyle::Standard => builder.try_init(),
    };
    Ok(())
}
