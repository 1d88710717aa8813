import { Section } from "../components/ui";

export function Overview(_props: { params: string[] }) {
  return <Section title="Overview"><p>Not built yet.</p></Section>;
}

