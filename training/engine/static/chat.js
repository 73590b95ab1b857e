// crawl2chat web chat: one page, no build step, nothing loaded from elsewhere.
// It talks to the same OpenAI-compatible endpoint as any client (POST /v1/chat/completions with
// "stream": true) and reads the server-sent events through fetch + ReadableStream. The conversation
// lives in this page only; assistant replies are kept as content parts (text / tool_call /
// tool_output, from the stream's crawl2chat_parts) so the model sees its tool calls again exactly.
"use strict";

const $ = (id) => document.getElementById(id);
let conversation = [];   // [{role, content}], sent whole with every request
let controller = null;   // AbortController of the reply being streamed (the stop button aborts it)
let modelName = null;
const shown = new WeakMap(); // conversation entry -> its bubble (greyed out when the entry is dropped)

fetch("/v1/models").then((r) => r.json()).then((j) => {
  modelName = j.data[0].id;
  $("model").textContent = modelName;
}).catch(() => { $("model").textContent = "(model unknown)"; });

function bubble(role) {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  $("messages").appendChild(div);
  return div;
}

function note(text) {
  const div = bubble("note");
  div.textContent = text;
  return div;
}

// The server left out the n oldest messages of `chat` (the page sends no system prompt).
function dropOldest(chat, n, before) {
  for (const entry of chat.splice(0, n)) shown.get(entry)?.classList.add("dropped");
  const div = note(`The ${n} oldest message(s) no longer fit the model's context and were left out (greyed).`);
  $("messages").insertBefore(div, before);
}

function scrollDown() { const m = $("messages"); m.scrollTop = m.scrollHeight; }

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

function numberOrNull(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

// One assistant reply: its parts and their elements grow as pieces arrive.
class Reply {
  constructor() {
    this.div = bubble("assistant");
    this.div.dataset.state = "waiting";
    this.parts = [];
    this.spans = [];
    this.tokens = null;    // from the stream's final usage chunk (absent when stopped)
    this.started = performance.now();
    this.firstAt = null;
  }
  add(piece) {
    if (this.firstAt === null) this.firstAt = performance.now();
    if (piece.index === this.parts.length) {          // a new part starts
      const { index, ...part } = piece;
      const el = document.createElement("span");
      el.className = `part ${part.type}`;
      if (part.type !== "text") {
        const label = document.createElement("span");
        label.className = "label";
        label.textContent = part.type === "tool_call" ? `tool call: ${part.name}` : "tool output";
        el.appendChild(label);
      }
      el.appendChild(document.createElement("span"));
      this.div.appendChild(el);
      this.parts.push({ ...part, [part.type === "tool_call" ? "arguments" : "text"]: "" });
      this.spans.push(el.lastChild);
    }
    const field = piece.type === "tool_call" ? "arguments" : "text";
    const text = piece[field] || "";
    this.parts[piece.index][field] += text;
    this.spans[piece.index].textContent += text;
  }
  finish(state, note) {
    this.div.dataset.state = state;
    const s = document.createElement("span");
    s.className = "stats";
    const secs = (performance.now() - this.started) / 1000;
    const stats = [];
    if (this.tokens !== null) stats.push(`${this.tokens} tokens`, `${(this.tokens / secs).toFixed(1)} tokens/s`);
    if (this.firstAt !== null) stats.push(`first token ${Math.round(this.firstAt - this.started)} ms`);
    if (note) stats.push(note);
    s.textContent = stats.join(" · ");
    this.div.appendChild(s);
  }
  fail(message) {
    this.div.classList.add("error");
    const e = document.createElement("span");
    e.className = "error-text";
    e.textContent = message;
    this.div.appendChild(e);
    this.div.dataset.state = "error";
  }
}

async function send() {
  const text = $("input").value;
  if (!text.trim() || controller) return;
  $("input").value = "";
  const asked = { role: "user", content: text };
  const userDiv = bubble("user");
  userDiv.textContent = text;
  shown.set(asked, userDiv);
  const chat = conversation;  // "New chat" replaces `conversation`: this reply belongs to the old one
  chat.push(asked);
  const reply = new Reply();
  scrollDown();
  controller = new AbortController();
  setBusy(true);
  const body = {
    model: modelName || "default", messages: chat, stream: true,
    stream_options: { include_usage: true },
    temperature: numberOrNull("temperature"), top_k: numberOrNull("top-k"),
    max_tokens: numberOrNull("max-tokens"), seed: numberOrNull("seed"),
    crawl2chat_trim_history: true,
  };
  let finish = null;
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body), signal: controller.signal,
    });
    if (!r.ok) {
      const j = await r.json().catch(() => null);
      throw new Error(j?.error?.message || `${r.status} ${r.statusText}`);
    }
    reply.div.dataset.state = "streaming";
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {   // one SSE event per blank-line-terminated block
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
          const chunk = JSON.parse(line.slice(6));
          if (chunk.error) throw new Error(chunk.error.message);
          if (chunk.usage) reply.tokens = chunk.usage.completion_tokens;
          if (chunk.crawl2chat_dropped_messages) dropOldest(chat, chunk.crawl2chat_dropped_messages, userDiv);
          const choice = chunk.choices[0];
          if (!choice) continue;
          for (const piece of choice.delta.crawl2chat_parts || []) reply.add(piece);
          if (choice.finish_reason) finish = choice.finish_reason;
          scrollDown();
        }
      }
    }
    reply.finish("done", finish === "length" ? "stopped at max tokens" : "");
    keep(chat, reply);
  } catch (e) {
    if (e.name === "AbortError") {                   // the stop button: keep what came so far
      reply.finish("stopped", "stopped");
      if (reply.parts.length) keep(chat, reply);
    } else {
      reply.fail(e.message);
      chat.pop();                                    // the failed turn is not part of the chat
      $("input").value = text;
    }
  } finally {
    controller = null;
    setBusy(false);
    scrollDown();
  }
}

function keep(chat, reply) {
  const entry = { role: "assistant", content: reply.parts };
  shown.set(entry, reply.div);
  chat.push(entry);
}

$("controls").addEventListener("submit", (e) => e.preventDefault());  // Enter in a field: no reload
$("send").addEventListener("click", send);
$("stop").addEventListener("click", () => controller && controller.abort());
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); }
});
$("new-chat").addEventListener("click", () => {
  if (controller) controller.abort();
  conversation = [];
  $("messages").replaceChildren();
  $("input").focus();
});
