// The page: a header with the sections and the wallet, and the page the hash route names.

import type { ComponentType } from "preact";
import { WalletBar } from "./components/walletbar";
import { ErrorBox } from "./components/ui";
import { useRoute, href } from "./lib/router";
import { AccountPage } from "./pages/account";
import { ContentPage } from "./pages/content";
import { ContributorPage } from "./pages/contributor";
import { DatanetList, DatanetPage } from "./pages/datanets";
import { EpochList, EpochPage } from "./pages/epochs";
import { ModelList, ModelPage, ModelVersionPage } from "./pages/models";
import { NodeList, NodePage } from "./pages/nodes";
import { Overview } from "./pages/overview";
import { PaymentsPage, UsageProofPage } from "./pages/payments";
import { PlaygroundPage } from "./pages/playground";

type Page = ComponentType<{ params: string[] }>;

/** Route patterns: ":x" matches one segment and is passed in `params`. */
const ROUTES: [string, Page][] = [
  ["", Overview],
  ["datanets", DatanetList],
  ["datanets/:id", DatanetPage],
  ["models", ModelList],
  ["models/:id", ModelPage],
  ["models/:id/versions/:version", ModelVersionPage],
  ["nodes", NodeList],
  ["nodes/:address", NodePage],
  ["payments", PaymentsPage],
  ["usage-proofs/:id", UsageProofPage],
  ["epochs", EpochList],
  ["epochs/:id", EpochPage],
  ["accounts/:address", AccountPage],
  ["content/:cid", ContentPage],
  ["contribute", ContributorPage],
  ["playground", PlaygroundPage],
];

function match(path: string[]): [Page, string[]] | null {
  for (const [pattern, page] of ROUTES) {
    const parts = pattern.split("/").filter(Boolean);
    if (parts.length !== path.length) continue;
    const params: string[] = [];
    if (parts.every((p, i) => (p.startsWith(":") ? params.push(path[i]) > 0 : p === path[i]))) return [page, params];
  }
  return null;
}

const NAV: [string, string][] = [
  ["", "Overview"],
  ["datanets", "Datanets"],
  ["models", "Models"],
  ["nodes", "Nodes"],
  ["payments", "Payments"],
  ["epochs", "Attribution"],
  ["contribute", "Contributor"],
  ["playground", "Playground"],
];

export function App() {
  const path = useRoute();
  const found = match(path);
  const section = path[0] ?? "";
  return (
    <>
      <header class="top">
        <a class="brand" href={href()}>
          OpenLedger
        </a>
        <nav>
          {NAV.map(([to, label]) => (
            <a key={to} href={to ? href(to) : href()} class={section === to || (to === "epochs" && section === "epochs") ? "active" : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <WalletBar />
      </header>
      <main>
        {found ? (
          (() => {
            const [Page, params] = found;
            return <Page key={path.join("/")} params={params} />;
          })()
        ) : (
          <ErrorBox error={`No page at #/${path.join("/")}.`} />
        )}
      </main>
    </>
  );
}
