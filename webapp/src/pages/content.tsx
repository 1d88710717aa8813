// One CID: the bytes the API serves, the CID recomputed from them in this page, and what
// they say. Every CID the explorer shows links here, so every one of them is checkable.

import { Verdict, PageHead, fetchChecked, textOf } from "../components/explorer";
import { Fields, Loaded, Section } from "../components/ui";
import { useAsync } from "../lib/async";
import { bytes } from "../lib/format";

const TEXT_LIMIT = 16 * 1024;

/** Pretty JSON when the whole content parses, else the first 16 KB of text, else null. */
function render(data: Uint8Array): { kind: "json" | "text"; text: string } | null {
  const text = textOf(data, data.length);
  if (text !== null) {
    try {
      return { kind: "json", text: JSON.stringify(JSON.parse(text), null, 2) };
    } catch {
      /* JSON Lines or plain text */
    }
  }
  const head = textOf(data, TEXT_LIMIT);
  return head === null ? null : { kind: "text", text: head };
}

export function ContentPage({ params }: { params: string[] }) {
  const cid = params[0];
  const state = useAsync(() => fetchChecked(cid), [cid]);
  return (
    <>
      <PageHead kicker="Content" title={<span class="mono break">{cid}</span>}>
        The bytes are fetched from the API's content store and their CID is recomputed in this browser (CIDv1, raw leaves,
        sha2-256, as <code>ipfs add --cid-version=1 --raw-leaves</code>).
      </PageHead>
      <Loaded state={state}>
        {({ data, computed, ok }) => {
          const shown = render(data);
          return (
            <>
              <Section title="Verification">
                <div class="verdict-big">
                  <Verdict ok={ok} testid="cid-verdict" yes="verified" no="mismatch" />
                  <span>{ok ? "The content matches its CID." : "The content does NOT match the CID it was asked for."}</span>
                </div>
                <div class="wide-fields">
                <Fields
                  rows={[
                    ["Requested CID", <span class="mono break">{cid}</span>],
                    ["Recomputed CID", <span class="mono break" data-testid="cid-computed">{computed}</span>],
                    ["Size", <span data-testid="content-size">{bytes(data.length)} ({data.length.toLocaleString("en")} bytes)</span>],
                    ["Kind", shown ? shown.kind.toUpperCase() : "binary"],
                  ]}
                />
                </div>
              </Section>
              <Section title="Content">
                {shown === null ? (
                  <p class="muted" data-testid="content-binary">
                    binary, {data.length} bytes
                  </p>
                ) : (
                  <>
                    {shown.kind === "text" && data.length > TEXT_LIMIT && <p class="muted">First 16 KB of {bytes(data.length)}.</p>}
                    <pre class="preview preview-tall" data-testid="content-preview">
                      {shown.text}
                    </pre>
                  </>
                )}
              </Section>
            </>
          );
        }}
      </Loaded>
    </>
  );
}
