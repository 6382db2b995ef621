//! Log set-up from `LOG_LEVEL` and `LOG_STYLE`, through `tracing`.

use cos_core::settings::{LogStyle, LoggingSettings};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; a second call (tests) leaves the first in place.
pub fn init(settings: &LoggingSettings) {
    let filter = EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
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
}
