import { Section } from "../components/ui";

export function ModelList(_props: { params: string[] }) {
  return <Section title="ModelList"><p>Not built yet.</p></Section>;
}

export function ModelPage(_props: { params: string[] }) {
  return <Section title="ModelPage"><p>Not built yet.</p></Section>;
}

export function ModelVersionPage(_props: { params: string[] }) {
  return <Section title="ModelVersionPage"><p>Not built yet.</p></Section>;
}

