//! `model-server`: parses the command line, sets up logging, and serves until stopped.

use clap::Parser;
use model_server::settings::Settings;
use model_server::{logging, server};

fn main() -> std::io::Result<()> {
    let settings = Settings::parse();
    logging::init(settings.log_file.as_deref(), settings.log_format)?;
    actix_web::rt::System::new().block_on(async move {
        let running = server::start(&settings).await.inspect_err(|e| {
            log::error!("could not start: {e}");
        })?;
        running.run().await
    })
}
