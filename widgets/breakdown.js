// Breakdown widget: parameter counts, LoRA cost per matrix type and the memory ledger.
import { el, renderLedger } from "./format.js";

function render({ model, el: host }) {
  const root = el("div", { class: "qn-card qn-breakdown", "data-testid": "qlora-breakdown" });
  host.append(root);
  const draw = () => renderLedger(root, model.get("ledger"), model.get("title"));
  model.on("change:ledger", draw);
  model.on("change:title", draw);
  draw();
}
export default { render };
