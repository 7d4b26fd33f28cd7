// Renders chat conversations with a chat template through @huggingface/jinja (the Jinja engine of transformers.js,
// configured as transformers renders chat templates), so the C# template engine can be checked against an
// independent implementation. Usage (from a folder where `npm install @huggingface/jinja@0.5.11` ran):
//   node render-chat.mjs TEMPLATE CASES_IN.jsonl OUT.jsonl
// tests/data/chat/v31_cases.jsonl: DeepSeek-V3.1's template (tests/data/chat/deepseek-v3.1.jinja) over the 36
// conversations of cases.jsonl and five tool conversations; v3_tool_cases.jsonl: DeepSeek-V3's template over the five
// tool conversations (its render does not depend on `thinking`, so one render each was kept).
// Each input line is {"name", "messages", "add_generation_prompt"}; each conversation is rendered with thinking
// false and true. Conversations the template itself refuses (it raises on some shapes) are left out.
import { Template } from "@huggingface/jinja";
import fs from "node:fs";

const [templatePath, casesPath, outPath] = process.argv.slice(2);
const template = new Template(fs.readFileSync(templatePath, "utf8"));
const out = [];
for (const line of fs.readFileSync(casesPath, "utf8").split("\n")) {
  if (!line.trim()) continue;
  const c = JSON.parse(line);
  for (const thinking of [false, true]) {
    let rendered;
    try {
      rendered = template.render({
        messages: c.messages,
        add_generation_prompt: c.add_generation_prompt,
        bos_token: "<｜begin▁of▁sentence｜>",
        eos_token: "<｜end▁of▁sentence｜>",
        thinking,
      });
    } catch (e) {
      continue;
    }
    out.push(JSON.stringify({ name: c.name, thinking, messages: c.messages, add_generation_prompt: c.add_generation_prompt, rendered }));
  }
}
fs.writeFileSync(outPath, out.join("\n") + "\n");
console.log(`${out.length} renders`);
