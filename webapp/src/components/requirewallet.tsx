// A page part that needs a connected wallet: the connect prompt until there is one.

import type { ComponentChildren } from "preact";
import { connectInjected } from "../lib/connect";
import { wallet } from "../lib/deployment";
import { useStore } from "../lib/store";
import type { Wallet } from "../lib/wallet";
import { Section } from "./ui";

export function RequireWallet({ title, why, children }: { title: string; why: string; children: (w: Wallet) => ComponentChildren }) {
  const connected = useStore(wallet);
  if (connected) return <>{children(connected)}</>;
  return (
    <Section title={title}>
      <p>{why}</p>
      <p>
        <button onClick={() => void connectInjected()}>Connect wallet</button>{" "}
        <span class="muted">or pick a local test account in the header (local chain only).</span>
      </p>
    </Section>
  );
}
