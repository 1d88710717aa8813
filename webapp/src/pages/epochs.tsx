import { Section } from "../components/ui";

export function EpochList(_props: { params: string[] }) {
  return <Section title="EpochList"><p>Not built yet.</p></Section>;
}

export function EpochPage(_props: { params: string[] }) {
  return <Section title="EpochPage"><p>Not built yet.</p></Section>;
}

