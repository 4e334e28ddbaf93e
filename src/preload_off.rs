//! Preload exists on Linux only (config refuses it elsewhere): nothing is ever preloaded here.

use crate::config::Config;
use crate::error::Error;
use crate::process::Backend;
use crate::ui::Ui;
use std::collections::BTreeMap;

#[derive(Default)]
pub struct Slot;

impl Slot {
    pub async fn fork(
        &mut self,
        _config: &Config,
        _base: &[(String, String)],
        _env: &BTreeMap<String, String>,
        _handed: (Option<&socket2::Socket>, Option<crate::output::Label>),
        _ui: &Ui,
    ) -> Result<Option<(Backend, usize)>, Error> {
        Ok(None)
    }

    pub async fn stop(&mut self) {}
}
