// Breakdown widget: parameter counts, LoRA cost per matrix type and the memory ledger.
// A snapshot says "as of …"; a widget that follows the session's events carries a "live" badge.
import { el, renderLedger, mount, listen } from "./format.js";

function render({ model, el: host }) {
  const root = el("div", { class: "qn-card qn-breakdown", "data-testid": "qlora-breakdown" });
  mount(host, root);
  const { on, off } = listen(model);  // every model listener, removed by the clean-up render returns
  const draw = () => {
    const asOf = model.get("as_of") || "";
    const live = asOf === "live";
    renderLedger(root, model.get("ledger"), model.get("title"), { asOf: live ? "" : asOf, live, openTable: true });
  };
  on("change:ledger", draw);
  on("change:title", draw);
  on("change:as_of", draw);
  draw();
  return off;
}
export default { render };
