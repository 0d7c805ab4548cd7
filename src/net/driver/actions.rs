//! The page's actions (`POST /api/get`, `POST /api/delete`): checked by
//! `http::authorize`, then run as the very menu command (`Command::Get`,
//! `Command::Delete`); the answer reports what the core then holds, with
//! the line the menu would have printed.

use super::Driver;
use crate::core::catalog::Lookup;
use crate::core::{Command, Effect, Time};
use crate::http::{self, ActionKind, ActionRequest};
use log::info;

impl Driver {
    /// Runs an authorized action and renders its JSON answer; an
    /// unauthorized one changes nothing and gets a 403.
    pub(super) fn on_http_action(&mut self, now: Time, req: &ActionRequest) -> Vec<u8> {
        let verb = match req.kind {
            ActionKind::Get => "get",
            ActionKind::Delete => "delete",
        };
        if let Err(refusal) = http::authorize(req, &self.http_token) {
            info!("http: refused a {verb} from the page: {refusal}");
            return http::refusal_response(refusal);
        }
        let id = match self.core.catalog().lookup(&req.file_id) {
            Lookup::Found(id) => id,
            _ => {
                let error = format!("{verb}: no single known file has an id starting with that");
                return http::action_error(404, "Not Found", &error);
            }
        };
        info!("http: {verb} {id} from the page");
        let cmd = match req.kind {
            ActionKind::Get => Command::Get {
                file: id.0.clone(),
                dest: None,
                force: false,
            },
            ActionKind::Delete => Command::Delete { file: id.0.clone() },
        };
        self.core.on_command(now, cmd);
        // The lines the menu would print answer the page too (and still
        // reach the terminal, as every effect is applied as usual).
        let effects = self.core.take_effects();
        let said: Vec<String> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Print(line) => Some(line.clone()),
                _ => None,
            })
            .collect();
        for effect in effects {
            self.apply(effect);
        }
        self.apply_effects();
        let message = said.join("; ");
        let done = match req.kind {
            ActionKind::Get => {
                self.core.downloads().by_file(&id).is_some() || self.core.local_copy(&id).is_some()
            }
            ActionKind::Delete => self.core.catalog().get(&id).is_none(),
        };
        if done {
            http::action_response(&message)
        } else {
            http::action_error(409, "Conflict", &message)
        }
    }
}
