//! The menu on stdin: lines read without blocking, commands run.

use super::workers::WorkerMsg;
use super::Driver;
use crate::cli::menu::{self, MenuCommand};
use crate::cli::{console, escape};
use crate::core::view::FilePage;
use crate::core::Command;
use crate::net::stdin::{self};
use crate::storage::{self};
use log::info;
use mio::unix::SourceFd;
use std::io;

impl Driver {
    /// Reads the menu lines typed so far (never blocks); EOF ends the menu.
    pub(super) fn read_stdin(&mut self) {
        let Some(reader) = self.stdin.as_mut() else {
            return;
        };
        let got = reader.drain(io::stdin().lock(), menu::MAX_LINE);
        if !got.lines.is_empty() || got.too_long > 0 {
            console::line_entered();
        }
        if got.too_long > 0 {
            escape::say(&format!(
                "line too long (over {} bytes); ignored",
                menu::MAX_LINE
            ));
        }
        for line in got.lines {
            self.on_menu_line(&line);
            if self.exit {
                return;
            }
        }
        if got.eof && self.exit_asked {
            escape::say("saving and exiting");
            self.exit = true;
            return;
        }
        if got.eof {
            info!("stdin closed; running without a menu");
            console::stop_prompting();
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&stdin::STDIN_FD));
            self.stdin = None;
        }
    }

    /// Runs one menu line.
    pub(super) fn on_menu_line(&mut self, line: &str) {
        let now = self.now();
        match menu::parse(line) {
            MenuCommand::List => say_table(&menu::render_list(&self.core.view(now))),
            MenuCommand::Peers => say_table(&menu::render_peers(&self.core.view(now))),
            MenuCommand::Transfers => say_table(&menu::render_transfers(&self.core.view(now))),
            MenuCommand::Help => say_table(menu::HELP),
            MenuCommand::Exit => {
                let warning = menu::exit_warning(&self.core.view_page(now, FilePage::NONE));
                match warning {
                    Some(w) if !self.exit_asked => {
                        self.exit_asked = true;
                        escape::say(&w);
                    }
                    _ => {
                        escape::say("saving and exiting");
                        self.exit = true;
                    }
                }
            }
            // A destination is checked first (off the loop: it may be on a
            // slow disk), so a refusal comes before any download.
            MenuCommand::Core(Command::Get {
                file,
                dest: Some(dest),
                force,
            }) => {
                let storage_dir = self.settings.dir.clone();
                let _ = self.worker_tx.send(Box::new(move || {
                    let checked = storage::check_dest(&dest, &storage_dir, force);
                    let cmd = Command::Get {
                        file,
                        dest: Some(dest),
                        force,
                    };
                    WorkerMsg::DestChecked(cmd, checked)
                }));
            }
            MenuCommand::Core(cmd) => self.core.on_command(now, cmd),
            MenuCommand::Nothing => {}
            MenuCommand::Invalid(hint) => escape::say(&hint),
        }
        self.apply_effects();
    }
}

/// Prints a table the menu built (its cells already escaped), below the
/// prompt's row.
fn say_table(text: &str) {
    use std::io::Write;
    console::leave_prompt_row();
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{text}");
}
