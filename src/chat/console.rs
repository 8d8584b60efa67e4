//! The console adapter: messages as text on a terminal, buttons numbered so
//! a person can press one by typing its number. Used by `rollbot demo`.

use super::*;
use std::io::Write;
use std::sync::{Arc, Mutex};

pub type SharedWriter = Arc<Mutex<dyn Write + Send>>;

struct State {
    next_message: u64,
    /// Button number → action id, for `/press N`.
    buttons: Vec<String>,
}

pub struct ConsoleSink {
    out: SharedWriter,
    state: Mutex<State>,
}

impl ConsoleSink {
    pub fn new(out: SharedWriter) -> ConsoleSink {
        ConsoleSink {
            out,
            state: Mutex::new(State {
                next_message: 1,
                buttons: Vec::new(),
            }),
        }
    }

    /// The action id behind button number `n` (1-based).
    pub fn button(&self, n: usize) -> Option<String> {
        self.state
            .lock()
            .unwrap()
            .buttons
            .get(n.checked_sub(1)?)
            .cloned()
    }

    /// Renders a message; buttons get numbers that stay valid for the session.
    pub fn render(&self, header: &str, msg: &Message, indent: &str) -> String {
        let mut s = format!(
            "{indent}{header}\n{indent}{} {}\n",
            msg.severity.icon(),
            msg.title
        );
        for line in msg.text.lines() {
            s.push_str(&format!("{indent}   {line}\n"));
        }
        for f in &msg.fields {
            // A value of several lines (a cascade's steps, a timeline)
            // stays under its name instead of starting at the margin.
            let under = format!("\n{indent}   {}", " ".repeat(f.name.chars().count() + 2));
            let value = f.value.replace('\n', &under);
            s.push_str(&format!("{indent}   {}: {value}\n", f.name));
        }
        if !msg.buttons.is_empty() {
            let mut st = self.state.lock().unwrap();
            let labels: Vec<String> = msg
                .buttons
                .iter()
                .map(|b| {
                    st.buttons.push(b.action_id.clone());
                    format!("[{}] {}", st.buttons.len(), b.label)
                })
                .collect();
            s.push_str(&format!(
                "{indent}   {}   (type /press N)\n",
                labels.join("   ")
            ));
        }
        if !msg.context.is_empty() {
            s.push_str(&format!("{indent}   · {}\n", msg.context.join(" · ")));
        }
        s
    }

    fn write(&self, text: &str) {
        let mut out = self.out.lock().unwrap();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    fn next_id(&self) -> String {
        let mut st = self.state.lock().unwrap();
        let id = st.next_message;
        st.next_message += 1;
        id.to_string()
    }
}

#[async_trait]
impl ChatSink for ConsoleSink {
    fn platform(&self) -> Platform {
        Platform::Console
    }

    async fn post(&self, channel: &str, msg: &Message) -> Result<MessageRef, ChatError> {
        let id = self.next_id();
        self.write(&self.render(&format!("── {channel} · message {id} ──"), msg, ""));
        Ok(MessageRef::posted(Platform::Console, channel, id))
    }

    async fn reply(&self, thread: &MessageRef, msg: &Message) -> Result<MessageRef, ChatError> {
        let id = self.next_id();
        let root = thread.thread_root();
        self.write(&self.render(
            &format!(
                "↳ {} · thread of message {root} · message {id}",
                thread.channel
            ),
            msg,
            "    ",
        ));
        Ok(thread.replied(Platform::Console, id, root))
    }

    async fn update(&self, at: &MessageRef, msg: &Message) -> Result<(), ChatError> {
        self.write(&self.render(
            &format!("✎ {} · message {} updated", at.channel, at.id),
            msg,
            if at.thread.is_some() { "    " } else { "" },
        ));
        Ok(())
    }

    /// Writes the picture to the temp dir and says where.
    async fn upload(&self, at: &MessageRef, file: &Attachment) -> Result<(), ChatError> {
        let dir = std::env::temp_dir().join("rollbot-charts");
        let path = dir.join(&file.name);
        let saved = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, &file.png));
        let place = match saved {
            Ok(()) => path.display().to_string(),
            Err(e) => format!("not saved: {e}"),
        };
        self.write(&format!(
            "🖼 {} · message {} · {} ({} bytes): {place}\n    {}\n",
            at.channel,
            at.id,
            file.name,
            file.png.len(),
            file.alt
        ));
        Ok(())
    }

    async fn ephemeral(&self, channel: &str, user: &Actor, msg: &Message) -> Result<(), ChatError> {
        self.write(&self.render(
            &format!("(only {} sees this in {channel})", user.display_name),
            msg,
            "",
        ));
        Ok(())
    }
}
