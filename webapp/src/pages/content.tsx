import { Section } from "../components/ui";

export function ContentPage(_props: { params: string[] }) {
  return <Section title="ContentPage"><p>Not built yet.</p></Section>;
}

