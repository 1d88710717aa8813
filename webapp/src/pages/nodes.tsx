import { Section } from "../components/ui";

export function NodeList(_props: { params: string[] }) {
  return <Section title="NodeList"><p>Not built yet.</p></Section>;
}

export function NodePage(_props: { params: string[] }) {
  return <Section title="NodePage"><p>Not built yet.</p></Section>;
}

