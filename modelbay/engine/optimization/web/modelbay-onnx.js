// ModelBay ONNX page: greedy next-token generation with the KV cache in onnxruntime-web (wasm backend).
// The graph's inputs and outputs are named as optimum and transformers.js name them: input_ids, attention_mask,
// position_ids, past_key_values.{i}.key|value -> logits, present.{i}.key|value; modelbay_onnx.json gives the
// cache's shape, the graph file and its external data files.
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  const status = (text) => { document.getElementById("status").textContent = text; };

  async function json(path) {
    const response = await fetch(path);
    if (!response.ok) throw new Error(path + ": HTTP " + response.status);
    return response.json();
  }

  async function load(manifest, graph) {
    ort.env.wasm.wasmPaths = new URL(params.get("ort") || "ort/", location.href).href;  // import() needs a URL
    ort.env.wasm.numThreads = 1;  // threads need cross-origin isolation headers, which a plain server lacks
    const folder = graph.includes("/") ? graph.slice(0, graph.lastIndexOf("/") + 1) : "";
    const external = ((manifest.graphs || {})[graph] || {}).external_data
      || (graph === manifest.file ? manifest.external_data : []) || [];
    return ort.InferenceSession.create(graph, {
      executionProviders: ["wasm"],
      // The graph names each file by its place beside it; the data is fetched from the folder.
      externalData: external.map((path) => ({ path: path.slice(folder.length), data: path })),
    });
  }

  function argmax(data, offset, size) {
    let best = 0;
    for (let i = 1; i < size; i++) if (data[offset + i] > data[offset + best]) best = i;  // first on ties
    return best;
  }

  function int64(values, dims) {
    return new ort.Tensor("int64", BigInt64Array.from(values, (v) => BigInt(v)), dims);
  }

  // The new token ids, greedy (an end-of-sequence id included, then it stops); onToken sees each step's list.
  async function generate(session, manifest, prompt, steps, onToken) {
    const layers = manifest.num_layers, heads = manifest.num_kv_heads, dim = manifest.head_dim;
    const vocab = manifest.vocab_size;
    const eos = new Set(manifest.eos_token_ids || []);
    let past = {};
    for (let i = 0; i < layers; i++) {
      for (const kind of ["key", "value"]) {
        past[`past_key_values.${i}.${kind}`] = new ort.Tensor("float32", new Float32Array(0), [1, heads, 0, dim]);
      }
    }
    const names = new Set(session.inputNames);
    let input = prompt.slice(), done = 0;
    const tokens = [];
    for (let step = 0; step < steps; step++) {
      const feeds = { input_ids: int64(input, [1, input.length]), ...past };
      if (names.has("attention_mask")) feeds.attention_mask = int64(new Array(done + input.length).fill(1), [1, done + input.length]);
      if (names.has("position_ids")) feeds.position_ids = int64(input.map((_, i) => done + i), [1, input.length]);
      const out = await session.run(feeds);
      const token = argmax(out.logits.data, (input.length - 1) * vocab, vocab);
      tokens.push(token);
      onToken(tokens);
      if (eos.has(token)) break;
      past = {};
      for (let i = 0; i < layers; i++) {
        for (const kind of ["key", "value"]) past[`past_key_values.${i}.${kind}`] = out[`present.${i}.${kind}`];
      }
      done += input.length;
      input = [token];
    }
    return tokens;
  }

  // Byte-level BPE (GPT-2 style) token ids -> text, from tokenizer.json's vocabulary; null for other tokenizers.
  function decoder(tokenizer) {
    if (!tokenizer || !tokenizer.model || !tokenizer.model.vocab || (tokenizer.decoder || {}).type !== "ByteLevel") return null;
    const byChar = new Map(), printable = [];
    for (let b = 33; b <= 126; b++) printable.push(b);
    for (let b = 161; b <= 172; b++) printable.push(b);
    for (let b = 174; b <= 255; b++) printable.push(b);
    let extra = 0;
    for (let b = 0; b < 256; b++) {
      byChar.set(String.fromCharCode(printable.includes(b) ? b : 256 + extra++), b);
    }
    const pieces = new Map(Object.entries(tokenizer.model.vocab).map(([piece, id]) => [id, piece]));
    const special = new Set((tokenizer.added_tokens || []).filter((t) => t.special).map((t) => t.id));
    return (ids) => {
      const bytes = [];
      for (const id of ids) {
        if (special.has(id)) continue;
        for (const ch of pieces.get(id) || "") if (byChar.has(ch)) bytes.push(byChar.get(ch));
      }
      return new TextDecoder().decode(new Uint8Array(bytes));
    };
  }

  async function post(result) {
    const target = params.get("post");
    if (target) await fetch(target, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(result) });
  }

  async function main() {
    const manifest = await json("modelbay_onnx.json");
    const graph = params.get("graph") || manifest.file;
    const decode = decoder(await json("tokenizer.json").catch(() => null));
    status("Loading " + graph + "…");
    const session = await load(manifest, graph);
    status("Ready: " + graph + " with onnxruntime-web " + ort.env.versions.web + " (wasm).");
    const run = async (prompt, steps) => {
      const started = performance.now();
      const tokens = await generate(session, manifest, prompt, steps, (sofar) => {
        document.getElementById("tokens").textContent = sofar.join(", ");
        if (decode) document.getElementById("text").textContent = decode(sofar);
      });
      const ms = performance.now() - started;
      status(`Generated ${tokens.length} tokens in ${ms.toFixed(0)} ms with ${graph}.`);
      return { tokens, graph, ms, error: null };
    };
    document.getElementById("form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const prompt = document.getElementById("ids").value.split(",").map((s) => parseInt(s.trim(), 10)).filter(Number.isInteger);
      await run(prompt, parseInt(document.getElementById("n").value, 10) || 16);
    });
    if (params.get("ids")) {
      const prompt = params.get("ids").split(",").map((s) => parseInt(s, 10));
      document.getElementById("ids").value = prompt.join(", ");
      document.getElementById("n").value = params.get("n") || "16";
      await post(await run(prompt, parseInt(params.get("n") || "16", 10)));
    }
  }

  main().catch(async (error) => {
    status("Failed: " + error);
    await post({ tokens: null, graph: params.get("graph"), ms: null, error: String(error && error.stack || error) }).catch(() => {});
  });
})();
