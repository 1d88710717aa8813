// Entry point: load the deployment the API indexes, then render the app.

import { render } from "preact";
import { App } from "./app";
import { loadStatus } from "./lib/deployment";

const root = document.getElementById("app");
if (root) {
  loadStatus().then(
    () => {
      root.replaceChildren(); // the static "Loading OpenLedger…" line is not Preact's to diff away
      render(<App />, root);
    },
    (error: unknown) => {
      root.innerHTML = "";
      const p = document.createElement("p");
      p.className = "error";
      p.textContent = `The OpenLedger API does not answer: ${error instanceof Error ? error.message : String(error)}`;
      root.append(p);
    },
  );
}
